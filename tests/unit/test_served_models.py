"""Issue 21: the model that really answered a name keys the decisions about it."""

from __future__ import annotations

from services.keyring.domain.models import Outcome, QuotaViolation
from services.keyring.domain.served import MAX_ALIASES, ServedModels, served_model


def test_the_served_model_comes_from_model_version_else_the_quota_dimension_else_the_name() -> None:
    assert (
        served_model(Outcome(200, served_model="gemini-3.5-flash-lite"), "gemini-2.5-flash") == "gemini-3.5-flash-lite"
    )
    violation = QuotaViolation(
        "GenerateRequestsPerMinutePerProjectPerModel", dimensions=(("model", "gemini-3.8-flash"),)
    )
    assert served_model(Outcome(429, violations=(violation,)), "gemini-2.5-pro") == "gemini-3.8-flash"
    assert served_model(Outcome(429), "gemini-3.5-flash") == "gemini-3.5-flash"


def test_an_alias_names_both_models_and_the_map_is_bounded() -> None:
    served = ServedModels()
    served.learn("gemini-2.5-flash", "gemini-3.5-flash-lite")
    served.learn("gemini-3.5-flash", "gemini-3.5-flash")
    assert served.names("gemini-2.5-flash") == ("gemini-2.5-flash", "gemini-3.5-flash-lite")
    assert served.names("gemini-3.5-flash") == ("gemini-3.5-flash",)
    assert served.served_of("gemini-2.5-flash") == "gemini-3.5-flash-lite"
    for i in range(MAX_ALIASES + 10):
        served.learn(f"made-up-{i}", "gemini-3.5-flash")
    assert len(served.aliases()) == MAX_ALIASES
