"""gRPC service (grpc.aio) built from proto/."""
