"""The edge's Ingress (Helm chart, every profile; kustomize, every overlay) routes every path the real edge
serves to clients (the dialects under /v1, /v1beta, /v1alpha; uploads; the Live WebSocket under /ws) and
none of its internal ones (/metrics, /healthz, /readyz).

Paths are read from the edge's own router, so a route added under a new first segment fails here until the
Ingress publishes it. Matching follows the Ingress ``Prefix`` rule (path element by path element). The Live
path also accepts ``//ws/...`` (the SDKs' base URLs end in "/"): ingress-nginx merges the slashes before it
matches a location (``merge_slashes`` is on) and passes the URI on as sent.
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from services.edge.app import create_app
from services.edge.config import EdgeSettings

from .conftest import CHART_PROFILES, OVERLAYS, Manifest, one, render_chart, render_overlay

INTERNAL = {"/metrics", "/healthz", "/readyz"}


@cache
def _served_paths() -> frozenset[str]:
    """One concrete path per route of the real edge app (variables filled in, ``{lead}`` empty)."""
    settings = EdgeSettings(keyring_addresses="127.0.0.1:1", upstream_base_url="http://127.0.0.1:2")  # not started
    paths = set()
    for resource in create_app(settings).router.resources():
        info = resource.get_info()
        template = info.get("path") or info["formatter"]
        paths.add(re.sub(r"\{[^}]+\}", "x", template.replace("{lead}", "")))
    return frozenset(paths)


def _prefix_matches(prefix: str, path: str) -> bool:
    """An Ingress ``Prefix`` path: element-wise, so /v1 matches /v1 and /v1/models but not /v1beta."""
    elements = [e for e in prefix.split("/") if e]
    return path.split("/")[1 : len(elements) + 1] == elements


def _edge_paths(ingress: Manifest) -> list[str]:
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert all(p["pathType"] == "Prefix" for p in paths)
    return [p["path"] for p in paths]


SOURCES = [("helm", profile) for profile in CHART_PROFILES] + [("kustomize", overlay) for overlay in OVERLAYS]


@pytest.mark.parametrize(("source", "name"), SOURCES)
def test_the_edge_ingress_routes_every_client_path_and_no_internal_one(source: str, name: str) -> None:
    manifests = render_chart(name) if source == "helm" else render_overlay(name)
    ingress = one(manifests, "Ingress", "keyring-edge" if source == "helm" else "edge")
    published = _edge_paths(ingress)
    served = _served_paths()
    assert served >= INTERNAL and any("/ws/google.ai.generativelanguage." in path for path in served)
    unrouted = {p for p in served - INTERNAL if not any(_prefix_matches(prefix, p) for prefix in published)}
    assert unrouted == set(), f"{source} {name}: the edge serves these, the Ingress does not route them"
    exposed = {p for p in INTERNAL if any(_prefix_matches(prefix, p) for prefix in published)}
    assert exposed == set(), f"{source} {name}: internal paths published"
    assert not _prefix_matches("/v1", "/v1beta/models") and _prefix_matches("/ws", "/ws/google.ai.x")
