"""Issue 11: a client trickling its request head no longer holds an admin connection (the edge's twin is in
tests/e2e/test_trust_boundary.py)."""

from __future__ import annotations

from services.admin.app import start_admin
from tests.e2e.test_trust_boundary import trickled_head_lasts

from .conftest import AdminStack


async def test_a_slow_request_head_is_cut_after_the_head_timeout(admin: AdminStack) -> None:
    settings = admin.settings.model_copy(update={"head_timeout_s": 1.0})
    runner, base_url = await start_admin(settings, host="127.0.0.1", port=0)
    try:
        lasted = await trickled_head_lasts(base_url, limit_s=5.0)
    finally:
        await runner.cleanup()
    assert 0.9 <= lasted < 2.5, f"the connection lasted {lasted:.1f} s"
