"""Examples, defaults and tests name current models (issue 21): gemini-2.5-flash and gemini-2.5-pro were retired
on 2026-12-01 (Google serves other models under those names), so they appear only where the retired name is the
point: the simulator's catalogue and served-as table, served-model aliasing, the "no longer available" 404."""

from __future__ import annotations

import re

from tests.docs import ROOT

RETIRED = re.compile(r"\bgemini-2\.5-(?:flash|pro)\b(?!-lite)")
# Each file with the reason it names a retired model.
RETIRED_IS_THE_POINT = {
    "services/simulator/catalog.py": "Google still lists the retired names",
    "services/simulator/quotas.py": "SERVED_AS: the model that answers each retired name",
    "services/keyring/domain/served.py": "why cooldowns are keyed by the served model",
    "docs/api.md": "the retirement, for operators",
    "tests/unit/test_served_models.py": "served-model aliasing",
    "tests/unit/test_billing_policy.py": "a retired model 'no longer available to new users' of a project",
    "tests/e2e/test_billing_tiers.py": "a retired name's cooldowns land on the model that answers it",
    "tests/integration/test_simulator.py": "the simulator's catalogue lists a retired name",
    "tests/unit/test_model_names.py": "this check",
}
SCANNED = ("services", "bench", "clients/python", "scripts", "deploy", "docs", "tests")
SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".json", ".toml", ".html", ".js", ".txt", ".tpl"}


def scanned_files() -> list[str]:
    """Repository-relative paths of the text files examples and tests live in (generated files left out)."""
    paths = [ROOT / "README.md", ROOT / "SECURITY.md"]
    for top in SCANNED:
        paths += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    skipped = ("__pycache__", ".egg-info", "node_modules", "/_proto/", "/proto/")
    names = [str(p.relative_to(ROOT)) for p in paths if p.is_file()]
    return sorted(n for n in names if not any(part in f"/{n}" for part in skipped))


def test_retired_models_are_named_only_where_the_retirement_is_the_point() -> None:
    files = scanned_files()
    assert "services/cli/pools.py" in files and "tests/e2e/conftest.py" in files  # the scan sees what it guards
    naming = {name for name in files if RETIRED.search((ROOT / name).read_text(errors="replace"))}
    assert naming - RETIRED_IS_THE_POINT.keys() == set(), (
        "name a current model (gemini-3.5-flash, gemini-3.1-pro-preview...) as the example"
    )
    assert RETIRED.search("models/gemini-2.5-pro:generateContent") and not RETIRED.search("gemini-2.5-flash-lite")
