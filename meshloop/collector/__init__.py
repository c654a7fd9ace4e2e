"""collector: gRPC servicers (Envoy ALS, Envoy metrics service, OTLP), bounded buffers,
write-ahead log and flusher — no business logic."""
