"""Generate the Python stubs for protos/ into services/common/proto.

Run: python scripts/gen_protos.py        (writes the files)
     python scripts/gen_protos.py --check (exits 1 when the committed output is stale)

The generated imports are rewritten to live under services.common.proto so that
no top-level package named after the proto package appears on sys.path.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "services" / "common" / "proto"
PACKAGE = "services.common.proto"


def generate(out_dir: Path) -> None:
    """Run protoc into out_dir and make the imports package-relative."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.rglob("*.py*"):
        text = path.read_text()
        text = re.sub(r"^from keyring\.v1 import", f"from {PACKAGE}.keyring.v1 import", text, flags=re.M)
        path.write_text(text)
    for folder in [out_dir, *[p for p in out_dir.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail when the committed stubs are stale")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if options.check:
            stale = [
                name
                for name in sorted(tree(fresh) | tree(OUT))
                if not (OUT / name).exists() or not (fresh / name).exists()
                or not filecmp.cmp(fresh / name, OUT / name, shallow=False)
            ]
            if stale:
                print("stale generated protobuf code: " + ", ".join(stale), file=sys.stderr)
                print("run: python scripts/gen_protos.py", file=sys.stderr)
                return 1
            print("generated protobuf code is up to date")
            return 0
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(fresh, OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
