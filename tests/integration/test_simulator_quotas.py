"""The simulator's per-(project, model) quotas (issue 14): RPM, TPM and RPD per project, with and
without RetryInfo, `limit: 0` models, oversized requests, spend limits and window resets.

Everything goes through the control API (`/_sim/quotas`, `/_sim/projects`); windows are crossed by
moving the simulator's quota clock (`advance_s`), so nothing here waits for real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from services.simulator import start_simulator

MODEL = "gemini-3.5-flash"
OTHER = "gemini-3.1-pro-preview"
SERVICE = "generativelanguage.googleapis.com"
RPM_ID = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
RPD_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
TPM_ID = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
KEYS = {"a1": "proj-a", "a2": "proj-a", "b1": "proj-b"}


class Sim:
    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base, self.http = base, http

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        if body is None:
            async with self.http.get(self.base + path) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()
        async with self.http.post(self.base + path, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def quotas(self, **body: Any) -> Any:
        return await self.control("/_sim/quotas", body)

    async def align(self) -> None:
        """Move the quota clock to just after the start of a minute window (a whole window ahead)."""
        state = await self.control("/_sim/quotas")
        now, window = state["now"], state["window_s"]
        await self.quotas(advance_s=window - now % window + 0.01)

    async def generate(self, key: str, text: str = "hi", model: str = MODEL) -> tuple[int, Any]:
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        async with self.http.post(
            f"{self.base}/v1beta/models/{model}:generateContent", json=body, headers={"x-goog-api-key": key}
        ) as resp:
            return resp.status, orjson.loads(await resp.read())


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    runner, base, _ = await start_simulator()
    try:
        async with aiohttp.ClientSession() as http:
            s = Sim(base, http)
            await s.control("/_sim/projects", {"projects": KEYS})
            yield s
    finally:
        await runner.cleanup()


def violations(body: Any) -> list[dict[str, Any]]:
    details = body["error"]["details"]
    (failure,) = [d for d in details if d["@type"].endswith("QuotaFailure")]
    found: list[dict[str, Any]] = failure["violations"]
    return found


def retry_delay(body: Any) -> str | None:
    found = [d["retryDelay"] for d in body["error"]["details"] if d["@type"].endswith("RetryInfo")]
    return found[0] if found else None


@pytest.mark.parametrize("retry_info", [True, False])
async def test_rpm_is_per_project_and_resets_with_the_window(sim: Sim, retry_info: bool) -> None:
    await sim.quotas(rpm=2, retry_info=retry_info)
    await sim.align()
    assert (await sim.generate("a1"))[0] == 200
    assert (await sim.generate("a2"))[0] == 200  # same project: shares the count
    status, body = await sim.generate("a1")
    assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert violations(body) == [
        {
            "quotaMetric": f"{SERVICE}/generate_content_free_tier_requests",
            "quotaId": RPM_ID,
            "quotaDimensions": {"location": "global", "model": MODEL},
            "quotaValue": "2",
        }
    ]
    assert "limit: 2, model: gemini-3.5-flash" in body["error"]["message"]
    if retry_info:
        delay = retry_delay(body)
        assert delay is not None and 55 <= float(delay.rstrip("s")) <= 60
        assert "Please retry in" in body["error"]["message"]
    else:
        assert retry_delay(body) is None and "Please retry" not in body["error"]["message"]
    assert (await sim.generate("a2"))[0] == 429
    assert (await sim.generate("b1"))[0] == 200  # another project has its own count
    assert (await sim.generate("a1", model=OTHER))[0] == 200  # and so has another model
    usage = (await sim.control("/_sim/quotas?project=proj-a"))["usage"]
    assert set(usage) == {"proj-a"}
    assert usage["proj-a"][MODEL]["minute"]["requests"] == 2  # refused requests consume nothing
    await sim.quotas(advance_s=60)
    assert (await sim.generate("a2"))[0] == 200


async def test_tpm_counts_input_tokens_per_project(sim: Sim) -> None:
    await sim.quotas(tpm=30, retry_info=True)
    await sim.align()
    text = "x" * 80  # 20 tokens, as promptTokenCount counts them
    status, body = await sim.generate("a1", text)
    assert status == 200 and body["usageMetadata"]["promptTokenCount"] == 20
    status, body = await sim.generate("a2", text)
    assert status == 429
    (violation,) = violations(body)
    assert violation["quotaId"] == TPM_ID and violation["quotaValue"] == "30"
    assert violation["quotaMetric"] == f"{SERVICE}/generate_content_free_tier_input_token_count"
    assert retry_delay(body) is not None
    assert (await sim.generate("a2", "x" * 40))[0] == 200  # 10 more tokens still fit
    assert (await sim.generate("b1", text))[0] == 200
    usage = (await sim.control("/_sim/quotas?project=proj-a"))["usage"]["proj-a"][MODEL]["minute"]
    assert usage == {"requests": 2, "tokens": 30, "resets_in_s": usage["resets_in_s"]}
    await sim.quotas(advance_s=60)
    assert (await sim.generate("a2", text))[0] == 200


async def test_oversized_request_is_refused_on_every_attempt(sim: Sim) -> None:
    await sim.quotas(tpm=100, retry_info=False)
    await sim.align()
    big = "y" * 404  # 101 tokens: more than the limit alone
    for key in ("a1", "a2", "b1", "a1"):
        status, body = await sim.generate(key, big)
        assert status == 429 and violations(body)[0]["quotaId"] == TPM_ID
        await sim.quotas(advance_s=60)  # even in a fresh window
    assert (await sim.generate("a1", "small"))[0] == 200


@pytest.mark.parametrize("retry_info", [True, False])
async def test_rpd_resets_at_pacific_midnight(sim: Sim, retry_info: bool) -> None:
    await sim.quotas(project="proj-a", model=MODEL, rpd=1, retry_info=retry_info)
    await sim.align()
    assert (await sim.generate("a1"))[0] == 200
    await sim.quotas(advance_s=60)  # a new minute is not a new day
    status, body = await sim.generate("a2")
    assert status == 429
    (violation,) = violations(body)
    assert violation["quotaId"] == RPD_ID and violation["quotaValue"] == "1"
    assert (await sim.generate("b1"))[0] == 200  # the rule is proj-a's only
    state = await sim.control("/_sim/quotas?project=proj-a")
    now = datetime.fromtimestamp(state["now"], ZoneInfo("America/Los_Angeles"))
    to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6)
    left = state["usage"]["proj-a"][MODEL]["day"]["resets_in_s"]
    assert abs(left - to_midnight) < 3700  # within a DST hour of the wall-clock midnight
    if retry_info:
        delay = retry_delay(body)
        assert delay is not None and abs(float(delay.rstrip("s")) - left) < 5
    else:
        assert retry_delay(body) is None
    await sim.quotas(advance_s=left + 1)
    assert (await sim.generate("a2"))[0] == 200


async def test_unavailable_model_says_limit_zero_with_the_real_client(sim: Sim) -> None:
    await sim.quotas(project="proj-a", model=OTHER, available=False)
    client = genai.Client(api_key="a1", http_options=types.HttpOptions(base_url=sim.base, api_version="v1beta"))
    try:
        for _ in range(2):
            with pytest.raises(genai_errors.ClientError) as caught:
                await client.aio.models.generate_content(model=OTHER, contents="hello")
            assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
            assert "limit: 0" in (caught.value.message or "")
            found = violations({"error": caught.value.details["error"]})
            assert {v["quotaId"] for v in found} == {RPM_ID, RPD_ID, TPM_ID}
            assert {v["quotaValue"] for v in found} == {"0"}
        answer = await client.aio.models.generate_content(model=MODEL, contents="hello")
        assert answer.text
    finally:
        await client.aio.aclose()
        client.close()
    assert (await sim.generate("b1", model=OTHER))[0] == 200
    await sim.quotas(project="proj-b", rpm=0)  # a zero limit of one metric reads the same way
    status, body = await sim.generate("b1")
    assert status == 429 and violations(body)[0]["quotaValue"] == "0"


async def test_real_client_sees_rpm_violation_and_openai_dialect_is_counted(sim: Sim) -> None:
    await sim.quotas(model=MODEL, rpm=1, retry_info=True)
    await sim.align()
    client = genai.Client(api_key="b1", http_options=types.HttpOptions(base_url=sim.base, api_version="v1beta"))
    try:
        await client.aio.models.generate_content(model=MODEL, contents="one")
        with pytest.raises(genai_errors.ClientError) as caught:
            await client.aio.models.generate_content(model=MODEL, contents="two")
        assert caught.value.code == 429
    finally:
        await client.aio.aclose()
        client.close()
    async with sim.http.post(
        f"{sim.base}/v1beta/openai/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer a1"},
    ) as resp:
        assert resp.status == 200
    async with sim.http.post(
        f"{sim.base}/v1beta/openai/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer a2"},
    ) as resp:
        assert resp.status == 429
        (error,) = await resp.json()
        assert error["error"]["details"][0]["violations"][0]["quotaId"] == RPM_ID


async def test_spend_limit_and_control_api(sim: Sim) -> None:
    await sim.quotas(project="proj-a", spend_budget_usd=0.00003, usd_per_mtok=1.0, spend_window_s=600)
    await sim.quotas(advance_s=600 - (await sim.control("/_sim/quotas"))["now"] % 600 + 0.01)
    assert (await sim.generate("a1", "z" * 80))[0] == 200  # 20 tokens: $0.00002
    status, body = await sim.generate("a2", "z" * 80)
    assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "spend" in body["error"]["message"] and retry_delay(body) is not None
    assert (await sim.generate("b1", "z" * 80))[0] == 200
    assert (await sim.control("/_sim/quotas?project=proj-a"))["spend_usd"] == {"proj-a": 0.00002}
    await sim.quotas(advance_s=600)
    assert (await sim.generate("a2", "z" * 80))[0] == 200
    async with sim.http.post(f"{sim.base}/_sim/quotas", json={"rpm": -1}) as resp:
        assert resp.status == 400
    state = await sim.quotas(clear=True)
    assert state["rules"] == [] and state["usage"] == {}
    assert (await sim.control("/_sim/quotas?project=proj-a"))["spend_usd"] == {}
