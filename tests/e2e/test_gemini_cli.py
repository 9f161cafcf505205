"""The real gemini-cli (npm `@google/gemini-cli`, pinned in scripts/gemini-cli.sh, which the test
command runs) answers `gemini -p "Say hello"` through the edge, with its default model routing.

It is pointed at the edge as a user points it at any Gemini endpoint: `GEMINI_API_KEY` (here the
pool's client token) and `GOOGLE_GEMINI_BASE_URL`, with "Use Gemini API key" selected in its
settings (0.61 treats a base URL without a selected auth type as an unsupported "gateway" auth).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import MakeStack

REPO = Path(__file__).resolve().parents[2]
GEMINI = REPO / ".tools" / "npm" / "node_modules" / ".bin" / "gemini"
# What gemini-cli prints on stderr when something failed (its harmless start-up notes are not this).
ERROR_LINE = re.compile(r"error|exception|failed|unhandled|\b[45]\d\d\b", re.IGNORECASE)

pytestmark = pytest.mark.skipif(
    not GEMINI.exists() or shutil.which("node") is None, reason="gemini-cli not installed (scripts/gemini-cli.sh)"
)


async def test_gemini_cli_says_hello_through_the_edge(make_stack: MakeStack, tmp_path: Path) -> None:
    stack = await make_stack(keys=2, allowed_models=())  # an empty allow-list: every model gemini-cli routes to
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".gemini").mkdir(parents=True)
    work.mkdir()
    settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GEMINI_API_KEY": stack.token,
        "GOOGLE_GEMINI_BASE_URL": stack.edge_url,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
    }
    process = await asyncio.create_subprocess_exec(
        str(GEMINI),
        "-p",
        "Say hello",
        cwd=work,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 100)
    stderr = err.decode(errors="replace")
    assert process.returncode == 0, stderr
    assert out.decode().strip() == "Simulated answer to: Say hello", (out, stderr)
    assert not [line for line in stderr.splitlines() if ERROR_LINE.search(line)], stderr
    sent = stack.sim.requests
    assert sent and all(r.key in stack.keys for r in sent)  # the pool's keys went upstream, never the token
    models = {r.model for r in sent}
    assert "gemini-3.5-flash-lite" in models  # its router's classifier, then the routed model
    assert len(models) >= 2 and all(m and m.startswith("gemini-3") for m in models), models
    await stack.no_lease_held()
