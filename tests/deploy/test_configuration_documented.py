"""Every setting a service reads is named in docs/configuration.md (the operator's one list of settings)."""

from __future__ import annotations

import pytest

from tests.docs import doc

from .conftest import SETTINGS_CLASSES, setting_env_names


@pytest.mark.parametrize("prefix", sorted(SETTINGS_CLASSES))
def test_every_setting_is_documented(prefix: str) -> None:
    text = doc("configuration")
    missing = sorted(name for name in setting_env_names(prefix) if f"`{name}`" not in text)
    assert not missing, f"docs/configuration.md names no {missing} (a table row or a sentence, in backquotes)"
