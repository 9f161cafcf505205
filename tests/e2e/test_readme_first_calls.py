"""The README's first calls ("Trying the demo") run as written against a stack: the curl block, the OpenAI SDK
and google-genai blocks, with only the demo's address swapped for the stack's edge. The gemini-cli block
selects the auth type test_gemini_cli.py runs the real CLI with."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil

import pytest

from tests.docs import section

from .conftest import MakeStack

DEMO_EDGE = "http://127.0.0.1:8080"
ANSWER = "Simulated answer to: Hello"


def blocks(language: str) -> list[str]:
    found = re.findall(rf"```{language}\n(.*?)```", section("README", "## Trying the demo"), flags=re.S)
    assert found, f"no {language} block in the README's Trying the demo"
    return [str(block) for block in found]


def run_python(code: str) -> str:
    """One README block, as a user pastes it into Python (blocking clients: run in a thread)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    return printed.getvalue()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_the_first_calls_answer(make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = await make_stack(keys=2)
    curl, gemini_cli = blocks("bash")
    assert curl.startswith("export TOKEN=kr-...")
    script = curl.split("\n", 1)[1].replace(DEMO_EDGE, stack.edge_url)
    process = await asyncio.create_subprocess_exec(
        "bash", "-euc", script, env={**os.environ, "TOKEN": stack.token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().count(ANSWER) == 2, out  # the OpenAI dialect's answer, then Gemini's

    monkeypatch.setenv("TOKEN", stack.token)
    sdks = blocks("python")
    assert len(sdks) == 2
    for code in sdks:
        printed = await asyncio.to_thread(run_python, code.replace(DEMO_EDGE, stack.edge_url))
        assert printed.strip() == ANSWER, code

    assert "GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8080" in gemini_cli and "GEMINI_API_KEY=$TOKEN" in gemini_cli
    assert '{"security": {"auth": {"selectedType": "gemini-api-key"}}}' in gemini_cli
