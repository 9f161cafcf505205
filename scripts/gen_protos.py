"""Generate the Python stubs for protos/ into services/common/proto and into the lease client package.

Run: python scripts/gen_protos.py        (writes the files)
     python scripts/gen_protos.py --check (exits 1 when the committed output is stale)

One proto, two copies of its stubs: the services' (services.common.proto) and
the lease client's (clients/python, keyring_lease._proto), which is installed
on its own and so cannot import the services' package. The generated imports
are rewritten to live under each package so that no top-level package named
after the proto package appears on sys.path.
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
# output folder -> the Python package it is imported as
TARGETS: dict[Path, str] = {
    ROOT / "services" / "common" / "proto": "services.common.proto",
    ROOT / "clients" / "python" / "keyring_lease" / "_proto": "keyring_lease._proto",
}


def generate(out_dir: Path, package: str) -> None:
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
        text = re.sub(r"^from keyring\.v1 import", f"from {package}.keyring.v1 import", text, flags=re.M)
        path.write_text(text)
    for folder in [out_dir, *[p for p in out_dir.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail when the committed stubs are stale")
    options = parser.parse_args()
    stale: list[str] = []
    for out, package in TARGETS.items():
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp)
            generate(fresh, package)
            if options.check:
                stale += [str((out / name).relative_to(ROOT)) for name in stale_files(fresh, out)]
                continue
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(fresh, out)
        print(f"wrote {out.relative_to(ROOT)}")
    if stale:
        print("stale generated protobuf code: " + ", ".join(stale), file=sys.stderr)
        print("run: python scripts/gen_protos.py", file=sys.stderr)
        return 1
    if options.check:
        print("generated protobuf code is up to date")
    return 0


def stale_files(fresh: Path, out: Path) -> list[str]:
    """The files of ``out`` that differ from the fresh output, are missing from it, or are extra."""
    return [
        name
        for name in sorted(tree(fresh) | tree(out))
        if not (out / name).exists() or not (fresh / name).exists()
        or not filecmp.cmp(fresh / name, out / name, shallow=False)
    ]


if __name__ == "__main__":
    raise SystemExit(main())
