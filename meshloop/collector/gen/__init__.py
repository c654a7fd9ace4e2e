"""Generated protobuf/gRPC code (scripts/gen_protos.py): Envoy metrics service, Prometheus model."""
