"""Build the gRPC stubs from proto/tts.proto (grpcio-tools' bundled protoc, offline).

Run by scripts/setup.sh and, when the stubs are missing or older than the
proto, on first import of `serve.generated`; the stamp holds the proto's hash.
The proto is mapped to the virtual path serve/generated/ so the generated
modules import each other as `serve.generated.*` without any editing.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "tts.proto"
OUT = ROOT / "serve" / "generated"
STAMP = OUT / "proto.sha256"


def proto_hash() -> str:
    return hashlib.sha256(PROTO.read_bytes()).hexdigest()


def up_to_date() -> bool:
    return (STAMP.is_file() and STAMP.read_text().strip() == proto_hash()
            and (OUT / "tts_pb2.py").is_file() and (OUT / "tts_pb2_grpc.py").is_file())


def build() -> None:
    """Generate serve/generated/tts_pb2{,_grpc}.py{,i} from the proto."""
    import grpc_tools
    from grpc_tools import protoc

    staging = ROOT / "serve" / ".protogen"
    (staging / "serve" / "generated").mkdir(parents=True, exist_ok=True)
    (staging / "serve" / "generated" / "tts.proto").write_bytes(PROTO.read_bytes())
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{staging}", f"-I{include}", f"--python_out={ROOT}", f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}", str(staging / "serve" / "generated" / "tts.proto")]
    OUT.mkdir(exist_ok=True)
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    (OUT / "__init__.py").write_text('"""Generated from proto/tts.proto by serve/protogen.py: do not edit."""\n')
    STAMP.write_text(proto_hash() + "\n")


def ensure() -> None:
    if not up_to_date():
        build()


if __name__ == "__main__":
    build()
    print(f"generated {OUT} from {PROTO}", file=sys.stderr)
