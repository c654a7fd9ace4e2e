"""accesslog: the access_logs column schema, protobuf batch → polars DataFrame, 1 s per-edge windows (pure functions)."""  # noqa: E501
