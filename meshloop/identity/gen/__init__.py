"""Generated protobuf/gRPC code (scripts/gen_identity_protos.py): Istio CA service."""
