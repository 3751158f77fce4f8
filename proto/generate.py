"""Regenerate the Python wire code in rm_sdk/_gen from proto/.

Run from anywhere: ``python proto/generate.py``. CI runs it and fails if the committed
files change (``git diff --exit-code rm_sdk/_gen``). protoc writes absolute imports
(``from paxoscommit.v1 import ...``); we rewrite them to live under ``rm_sdk._gen``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT = ROOT / "rm_sdk" / "_gen"
PACKAGE = "rm_sdk._gen"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    # mypy-protobuf's plugins live beside this interpreter.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out={OUT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    for path in sorted(OUT.rglob("*.py*")):
        text = path.read_text()
        text = re.sub(r"^from paxoscommit\.", f"from {PACKAGE}.paxoscommit.", text, flags=re.M)
        text = re.sub(r"^import paxoscommit\.", f"import {PACKAGE}.paxoscommit.", text, flags=re.M)
        path.write_text(text)
    for d in [OUT, *[p for p in OUT.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").write_text("")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
