"""The generated protobuf and gRPC modules, built from proto/tts.proto first if needed."""
from serve.protogen import ensure

ensure()

from serve.generated import tts_pb2 as pb  # noqa: E402
from serve.generated import tts_pb2_grpc as rpc  # noqa: E402

__all__ = ["pb", "rpc"]
