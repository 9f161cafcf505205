"""The domain package must import no framework: it is tested (and reasoned about) alone."""

from __future__ import annotations

import subprocess
import sys


def test_domain_imports_no_grpc_aiohttp_or_aetcd() -> None:
    probe = (
        "import sys, pkgutil, importlib, services.keyring.domain as d\n"
        "for m in pkgutil.iter_modules(d.__path__): importlib.import_module('services.keyring.domain.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'grpc', 'aiohttp', 'aetcd', 'google'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
