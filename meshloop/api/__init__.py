"""HTTP surfaces: the meshloop API and the ClickHouse HTTP interface of the embedded store."""
