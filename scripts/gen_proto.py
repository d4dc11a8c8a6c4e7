#!/usr/bin/env python3
"""Generate Python code and type stubs for proto/landlord/v1 into common/gen.

Usage: gen_proto.py [OUT_DIR]   (default: common/gen)

protoc writes absolute imports (``from landlord.v1 import types_pb2``); they
are rewritten to ``common.gen.landlord.v1`` so the generated modules import
without sys.path tricks. The descriptor file names stay ``landlord/v1/*.proto``
so reflection shows the real API names.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = "common.gen"
IMPORT_RE = re.compile(r"^(from|import) landlord\.v1", re.MULTILINE)


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        sys.exit("no .proto files under proto/")
    include = Path(protoc.__file__).parent / "_proto"
    # protoc finds the mypy plugins on PATH; they live beside this interpreter.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        for src in sorted(Path(tmp).rglob("*")):
            if src.is_dir():
                continue
            rel = src.relative_to(tmp)
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = IMPORT_RE.sub(lambda m: f"{m.group(1)} {PACKAGE}.landlord.v1", src.read_text())
            dst.write_text(text)
    for pkg in [out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())]:
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by scripts/gen_proto.py; do not edit."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "common" / "gen")
