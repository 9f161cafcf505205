"""python -m services.keyring.reseal: every secret under the current KEK, every client token keyed by it.

Run with the same KEYRING_* settings as the replicas (store, prefix, KEKs)
while they serve: each upstream key whose sealed secret names another KEK
(or none: sealed before KEKs had ids) is opened and sealed again under the
current KEK, and each client token not keyed with the current KEK's token key
(or not keyed at all: stored before keyed hashes) is keyed again from its
sealed SHA-256. Every write is guarded by the record's mod_revision, so a
replica's concurrent write (a key's health, an operator's edit) is never
lost: the record is read again and re-sealed again. Replicas follow the
changes through their watch; those that hold both KEKs (SECURITY.md,
"Rotating the KEK") lease throughout. Running it twice is harmless.

``--check`` changes nothing and reports what is left, among it
``unkeyed_tokens``: client tokens from before keyed hashes, which Acquire
refuses unless KEYRING_ACCEPT_UNKEYED_TOKENS is on (an upgrade's switch; turn
it off once this count is 0). Exit status: 0 when nothing is left (or, with
--check, nothing needs doing), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence

import orjson

from services.common.tls import warn_plaintext

from .codec import Layout, Record, decode, encode
from .config import KeyringSettings
from .domain.models import ClientToken, UpstreamKey
from .sealing import SealingError, SecretBox
from .store import MAX_WRITES_PER_COMMIT, EtcdStore, Store, Write

log = logging.getLogger(__name__)

_ATTEMPTS = 8
_KINDS = ("keys", "tokens")


@dataclasses.dataclass
class ResealReport:
    kek_id: str
    keys_resealed: int = 0
    tokens_rekeyed: int = 0
    keys_left: int = 0  # not under the current KEK (--check, or could not be written)
    tokens_left: int = 0
    unkeyed_tokens: int = 0  # of tokens_left: bare SHA-256 records, refused at Acquire without the switch
    unopenable: list[str] = dataclasses.field(default_factory=list)  # ids no configured KEK opens

    @property
    def done(self) -> bool:
        return not (self.keys_left or self.tokens_left or self.unopenable)


def needs_work(box: SecretBox, record: Record) -> bool:
    if isinstance(record, UpstreamKey):
        return not box.is_current(record.sealed_secret)
    if isinstance(record, ClientToken):
        return not box.token_is_current(record)
    return False


def resealed(box: SecretBox, record: Record) -> Record:
    """The record under the current KEK; raises SealingError when no configured KEK opens it."""
    if isinstance(record, UpstreamKey):
        secret = box.open(record.sealed_secret, record.key_id)
        return dataclasses.replace(record, sealed_secret=box.seal(secret, record.key_id))
    if isinstance(record, ClientToken):
        return box.key_token(record)
    return record


async def reseal(store: Store, layout: Layout, box: SecretBox, *, check_only: bool = False) -> ResealReport:
    report = ResealReport(box.kek_id)
    snapshot = await store.snapshot(layout.prefix)
    pending: list[tuple[str, bytes, int]] = []
    for entry in snapshot.entries:
        kind, _ = layout.kind_of(entry.key)
        if kind in _KINDS and _pending(box, kind, entry.value, entry.mod_revision):
            pending.append((entry.key, entry.value, entry.mod_revision))
    if check_only:
        _count_left(layout, pending, box, report)
        return report
    batch_size = MAX_WRITES_PER_COMMIT // 2
    for start in range(0, len(pending), batch_size):
        await _reseal_batch(store, layout, box, pending[start : start + batch_size], report)
    return report


def _pending(box: SecretBox, kind: str, value: bytes, revision: int) -> bool:
    try:
        record = decode(kind, value, revision)
    except (ValueError, KeyError, TypeError):
        return False
    return record is not None and needs_work(box, record)


def _count_left(
    layout: Layout, entries: Sequence[tuple[str, bytes, int]], box: SecretBox, report: ResealReport
) -> None:
    for path, value, revision in entries:
        kind, parts = layout.kind_of(path)
        record = decode(kind, value, revision)
        if record is None:
            continue
        try:
            resealed(box, record)
        except SealingError:
            report.unopenable.append(parts[0])
            continue
        if kind == "keys":
            report.keys_left += 1
        else:
            report.tokens_left += 1
            if isinstance(record, ClientToken) and not record.keyed:
                report.unkeyed_tokens += 1


async def _reseal_batch(
    store: Store, layout: Layout, box: SecretBox, batch: list[tuple[str, bytes, int]], report: ResealReport
) -> None:
    """One guarded commit for the batch; after a lost guard, read the batch again and decide again."""
    entries = batch
    for _ in range(_ATTEMPTS):
        writes: list[Write] = []
        kinds: list[str] = []
        unopenable: list[str] = []
        for path, value, revision in entries:
            kind, parts = layout.kind_of(path)
            record = decode(kind, value, revision)
            if record is None or not needs_work(box, record):
                continue
            try:
                writes.append(Write(path, encode(resealed(box, record)), revision))
            except SealingError:
                unopenable.append(parts[0])
                continue
            kinds.append(kind)
        if not writes or await store.commit(writes) is not None:
            report.keys_resealed += kinds.count("keys")
            report.tokens_rekeyed += kinds.count("tokens")
            report.unopenable.extend(unopenable)
            return
        fresh = [await store.get(path) for path, _, _ in entries]
        entries = [(entry.key, entry.value, entry.mod_revision) for entry in fresh if entry is not None]
    log.warning("gave up on %d records after %d lost guards; run the command again", len(entries), _ATTEMPTS)
    _count_left(layout, entries, box, report)


async def open_store(settings: KeyringSettings) -> EtcdStore:
    """The store the replicas use, opened with the same settings (TLS and client certificate, etcd user)."""
    tls = settings.etcd_tls()
    if tls is None:
        warn_plaintext("keyring reseal", "etcd connection")
    return await EtcdStore.open(
        settings.etcd_endpoint, timeout_s=settings.etcd_timeout_s, tls=tls, credentials=settings.etcd_credentials()
    )


async def run(settings: KeyringSettings, *, check_only: bool) -> ResealReport:
    store = await open_store(settings)
    try:
        return await reseal(store, Layout(settings.prefix), settings.secret_box(), check_only=check_only)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.keyring.reseal",
        description="Re-seal every upstream key and re-key every client token under the current KEK "
        "(settings from the KEYRING_* variables the replicas use).",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; report what is left (exit 1 if any)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = KeyringSettings()
    report = asyncio.run(run(settings, check_only=args.check))
    _say_unkeyed(report, settings.accept_unkeyed_tokens)
    sys.stdout.write(orjson.dumps({**dataclasses.asdict(report), "done": report.done}).decode() + "\n")
    return 0 if report.done else 1


def _say_unkeyed(report: ResealReport, accepted: bool) -> None:
    """Whether the upgrade's switch (KEYRING_ACCEPT_UNKEYED_TOKENS) is still needed."""
    if report.unkeyed_tokens:
        log.warning(
            "%d client token(s) have an unkeyed hash: Acquire refuses them unless KEYRING_ACCEPT_UNKEYED_TOKENS "
            "is on; run without --check to key them",
            report.unkeyed_tokens,
        )
    elif accepted:
        log.info("no unkeyed client token left: turn KEYRING_ACCEPT_UNKEYED_TOKENS off")


if __name__ == "__main__":
    sys.exit(main())
