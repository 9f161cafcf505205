"""Issue 18: what of admin the outside reaches. The Kubernetes Ingress and the compose TLS proxy publish the
console and the API only (/metrics, /openapi.json and the probes stay inside), and admin trusts the proxy in
front of it for X-Forwarded-For, so failed logins are counted per real client, not per proxy."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from services.admin.config import parse_networks

from .conftest import OVERLAYS, ROOT, compose, compose_env, container_env, one, render_overlay

PUBLISHED = ("/", "/api/login", "/api/pools", "/static/app.js")
INTERNAL = ("/metrics", "/openapi.json", "/healthz", "/readyz", "/apix", "/metrics/x")


def _matches(rule: dict[str, Any], path: str) -> bool:
    """Whether an Ingress path rule routes ``path`` (Kubernetes' Exact and element-wise Prefix matching)."""
    if rule["pathType"] == "Exact":
        return path == rule["path"]
    prefix = rule["path"].rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_admin_ingress_routes_only_the_console_and_the_api(overlay: str) -> None:
    manifests = render_overlay(overlay)
    rules = [rule for r in one(manifests, "Ingress", "admin")["spec"]["rules"] for rule in r["http"]["paths"]]
    assert {rule["pathType"] for rule in rules} <= {"Exact", "Prefix"}
    for path in PUBLISHED:
        assert any(_matches(rule, path) for rule in rules), f"{overlay}: {path} is not routed"
    for path in INTERNAL:
        assert not any(_matches(rule, path) for rule in rules), f"{overlay}: {path} is published"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_admin_trusts_the_ingress_controller_for_the_client_address(overlay: str) -> None:
    manifests = render_overlay(overlay)
    admin = one(manifests, "Deployment", "admin")["spec"]["template"]["spec"]["containers"][0]
    networks = parse_networks(container_env(manifests, admin).get("ADMIN_TRUSTED_PROXIES", ""))
    assert networks, f"{overlay}: ADMIN_TRUSTED_PROXIES is empty: every client would be the ingress controller"
    # The controller's pods are on the cluster's private network; the public internet is never trusted.
    assert all(network.is_private for network in networks), networks
    assert not any(ipaddress.ip_address("203.0.113.7") in network for network in networks)


def test_the_compose_tls_proxy_publishes_only_the_console_and_the_api() -> None:
    conf = (ROOT / "deploy" / "compose" / "admin-nginx.conf").read_text()
    proxied = set(re.findall(r"location (= )?(\S+) \{[^}]*proxy_pass http://admin;", conf))
    assert {path for _, path in proxied} == {"/", "/static/", "/api/", "/api/login"}
    assert ("= ", "/") in proxied  # the console's page only, not a prefix
    assert re.search(r"location / \{ return 404; \}", conf)
    login = re.search(r"location = /api/login \{[^}]*client_max_body_size (\d+)k;", conf)
    assert login is not None and int(login.group(1)) <= 4
    env = compose_env(compose()["services"]["admin"])
    assert env["ADMIN_TRUSTED_PROXIES"] == compose()["services"]["admin-tls"]["networks"]["default"]["ipv4_address"]
