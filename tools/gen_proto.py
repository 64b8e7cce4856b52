#!/usr/bin/env python
"""Regenerate caffessl/proto/caffe_pb2.py from proto/caffe.proto.

Equivalent to (run from the repository root):

    python -m grpc_tools.protoc -Iproto --python_out=caffessl/proto proto/caffe.proto

The output depends only on proto/caffe.proto and the protoc bundled with the
installed grpcio-tools (its version is written into the generated header), so
running this twice gives byte-identical files. No post-processing is needed:
caffe.proto imports nothing, so the generated module has no relative imports
to fix.

Usage: python tools/gen_proto.py [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO_ROOT / "proto"
PROTO_FILE = PROTO_DIR / "caffe.proto"
DEFAULT_OUT = REPO_ROOT / "caffessl" / "proto"


def generate(out_dir: Path | str = DEFAULT_OUT) -> Path:
    """Run protoc (from grpc_tools) and return the path of caffe_pb2.py."""
    from grpc_tools import protoc  # raises ImportError if grpcio-tools is absent

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Relative include path + file name => descriptor name "caffe.proto",
    # independent of where the checkout lives.
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        str(PROTO_FILE),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    out = out_dir / "caffe_pb2.py"
    # Normalise line endings so the file is identical on every platform.
    data = out.read_bytes().replace(b"\r\n", b"\n")
    out.write_bytes(data)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT),
                    help="output directory (default: caffessl/proto)")
    ns = ap.parse_args(argv)
    path = generate(ns.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
