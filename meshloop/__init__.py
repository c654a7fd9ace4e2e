"""meshloop."""
