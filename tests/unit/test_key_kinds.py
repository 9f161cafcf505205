"""Both kinds of Gemini API key: told apart, accepted, masked and redacted without assuming a prefix."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from services.common.logs import JsonFormatter
from services.common.masking import mask, redact, redact_bytes, scrub
from services.devstack.fake_keys import fake_auth_key, fake_gemini_key
from services.keyring.codec import decode_key, encode
from services.keyring.domain.identity import is_key_string, key_kind, kind_from_mask
from tests.unit.builders import key as build_key

AUTH = fake_auth_key("unit")
STANDARD = fake_gemini_key("unit")


@pytest.mark.parametrize(
    ("candidate", "kind"),
    [
        (AUTH, "auth"),
        ("AQ." + "a" * 20, "auth"),
        ("AQ." + "Z_-9" * 50, "auth"),
        (STANDARD, "standard"),
        ("AIza" + "x" * 35, "standard"),
    ],
)
def test_both_kinds_are_keys_and_told_apart(candidate: str, kind: str) -> None:
    assert is_key_string(candidate)
    assert key_kind(candidate) == kind
    assert kind_from_mask(mask(candidate)) == kind


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "AQ.",
        "AQ." + "a" * 19,  # too short
        "AQ." + "a" * 201,  # too long
        "AQ." + "a" * 19 + "!",
        "AQ," + "a" * 30,
        "aq." + "a" * 30,
        " " + AUTH,
        AUTH + "\n",
        "AIza" + "x" * 34,
        "AIza" + "x" * 36,
        "sk-openai-key-0123456789abcdef",
        "kr-" + "a" * 40,
    ],
)
def test_anything_else_is_no_key(candidate: str) -> None:
    assert not is_key_string(candidate)


def test_masks_show_neither_kind_in_full() -> None:
    for secret in (AUTH, STANDARD):
        shown = mask(secret)
        assert secret not in shown and shown.startswith(secret[:4]) and shown.endswith(secret[-4:])


def test_redaction_covers_both_kinds_and_client_tokens_anywhere_in_a_text() -> None:
    token = "kr-" + "t" * 43
    text = f"Consumer 'api_key:{AUTH}' and key={STANDARD}; token {token}."
    redacted = redact(text)
    for secret in (AUTH, STANDARD, token):
        assert secret not in redacted and mask(secret) in redacted
    assert redact_bytes(text.encode()) == redacted.encode()
    assert redact("nothing secret: AQ.short AIza-too-short") == "nothing secret: AQ.short AIza-too-short"


def test_scrub_masks_the_leased_secret_whatever_its_shape_and_every_key_shaped_string() -> None:
    odd = "custom-secret-under-a-custom-pattern"
    body = f'{{"error": "{odd} / {AUTH} / {STANDARD}"}}'.encode()
    scrubbed = scrub(body, odd)
    assert odd.encode() not in scrubbed and AUTH.encode() not in scrubbed and STANDARD.encode() not in scrubbed


def test_every_log_line_is_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("tests.key_kinds")
    logger.addHandler(handler)
    try:
        logger.warning("leaked %s", AUTH, extra={"fields": {"key": STANDARD}})
        try:
            raise ValueError(f"a library quoting {AUTH}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert AUTH not in text and STANDARD not in text
    assert mask(AUTH) in text
    for line in text.splitlines():
        orjson.loads(line)  # still JSON


def test_a_key_record_keeps_its_kind_and_records_from_before_kinds_get_it_from_their_mask() -> None:
    record = build_key("k-1", kind="auth")
    assert decode_key(orjson.loads(encode(record)), 0).kind == "auth"
    old = orjson.loads(encode(record))
    del old["kind"]
    old["mask"] = mask(AUTH)
    assert decode_key(old, 0).kind == "auth"
    old["mask"] = mask(STANDARD)
    assert decode_key(old, 0).kind == "standard"


async def test_adding_and_importing_keep_the_kind_and_refuse_anything_else_per_item() -> None:
    from services.keyring.administration import Administration, KeyInput
    from services.keyring.core import Keyring
    from services.keyring.domain.errors import InvalidArgument
    from services.keyring.domain.identity import GEMINI_KEY_PATTERN
    from services.keyring.domain.models import Pool
    from services.keyring.sealing import SecretBox, generate_kek
    from services.keyring.store import MemoryStore
    from services.keyring.transfer import export_document, import_document

    class Checker:
        async def check(self, secret: str) -> object:
            raise AssertionError("no check expected")

        async def close(self) -> None:
            pass

    store, box = MemoryStore(), SecretBox.from_base64(generate_kek())
    keyring = Keyring(store, box, Checker(), replica_id="r1", janitor_interval_s=3600)  # type: ignore[arg-type]
    await keyring.start(timeout_s=2)
    try:
        admin = Administration(keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=10)
        await admin.pools.create_pool(Pool("main"))
        results = await admin.keys.add_keys(
            "main", [KeyInput(secret=AUTH), KeyInput(secret=STANDARD), KeyInput(secret="AQ.short")]
        )
        assert [result.status for result in results] == ["added", "added", "malformed"]
        assert "auth key" in results[2].message and "AQ.short" not in results[2].message
        kinds = {key.mask: key.kind for key in keyring.cache.view.keys.values()}
        assert kinds == {mask(AUTH): "auth", mask(STANDARD): "standard"}

        document = export_document(keyring.cache.view, box, 0.0, include_secrets_in_clear=True)
        other_store = MemoryStore()
        other = Keyring(other_store, box, Checker(), replica_id="r2", janitor_interval_s=3600)  # type: ignore[arg-type]
        await other.start(timeout_s=2)
        try:
            imported = await import_document(
                other.cache.view, other.writer, box, document,
                key_pattern=GEMINI_KEY_PATTERN, keep_client_tokens=False, now=1.0,
            )  # fmt: skip
            assert imported[1] == 2
            assert {key.mask: key.kind for key in other.cache.view.keys.values()} == kinds
            bad = document.replace(AUTH.encode(), b"AQ.not-a-key")
            with pytest.raises(InvalidArgument, match=r"keys\[\d\]: AQ\.n\.\.\..* is not a Gemini API key"):
                await import_document(
                    other.cache.view, other.writer, box, bad,
                    key_pattern=GEMINI_KEY_PATTERN, keep_client_tokens=False, now=1.0,
                )  # fmt: skip
        finally:
            await other.stop()
            await other_store.close()
    finally:
        await keyring.stop()
        await store.close()


def test_a_minted_browser_token_never_reaches_a_log_line() -> None:
    browser_token = "auth_tokens/" + "b" * 43
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("tests.key_kinds.browser")
    logger.addHandler(handler)
    try:
        logger.warning("redeemed %s", browser_token, extra={"fields": {"token": browser_token}})
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert browser_token not in text
    assert "auth_tokens/bbbb...bbbb" in text
    orjson.loads(text.splitlines()[0])
