"""Service classes (issue 21): standard, flex and priority traffic of one (project, model) are apart.

Google limits each class on its own: priority has its own limit (0.3x the
standard one) and counts against standard too; flex has its own limits and
latency. So a 429 of a priority or flex call is a fact about that class
only. Everything keyring learns or paces per (project, model) is keyed by
the *class model*: the model for standard (today's keys: no stored record
changes), ``<model>@flex`` or ``<model>@priority`` otherwise. ``@`` never
appears in a model id the edge accepts, so a class model cannot collide with
a real one.

Which records keep a call of each class from a project (``blocking``):

- standard: the model's own (as before);
- priority: its class's and the model's (it counts against standard too);
- flex: its class's, and of the model's only the facts about the model
  (``CooldownReason.NOT_ON_TIER``, ``MODEL_GONE``), not standard's quota.

Project- and account-wide cooldowns (a spend limit, a 402: model ``*``)
hold for every class.
"""

from __future__ import annotations

from typing import Final

STANDARD: Final = ""
FLEX: Final = "flex"
PRIORITY: Final = "priority"
CLASSES: Final = (FLEX, PRIORITY)  # the classes with their own records
_SEPARATOR: Final = "@"


def service_class(service_tier: str) -> str:
    """The class a request's service_tier names: "" (standard: also "standard" or unknown), "flex", "priority"."""
    return service_tier if service_tier in CLASSES else STANDARD


def class_model(model: str, service_tier: str) -> str:
    """What a call of ``service_tier`` for ``model`` is counted, cooled and limited under."""
    tier = service_class(service_tier)
    return f"{model}{_SEPARATOR}{tier}" if tier and model else model


def split(name: str) -> tuple[str, str]:
    """A class model's (model, class); a plain model is its own, standard."""
    model, _, tier = name.rpartition(_SEPARATOR)
    if model and tier in CLASSES:
        return model, tier
    return name, STANDARD


def counts_against_standard(service_tier: str) -> bool:
    """Whether a call of this class also uses the standard limit (standard itself, and priority)."""
    return service_class(service_tier) != FLEX
