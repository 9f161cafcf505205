"""Secrets at rest without servers: KEK ids on sealed secrets, several KEKs, keyed client-token hashes."""

from __future__ import annotations

import base64
import os
import random
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.naming import token_hash
from services.keyring.domain.allocator import Allocator
from services.keyring.domain.leasing import LeaseBook
from services.keyring.domain.models import ClientToken, Pool
from services.keyring.domain.view import KeyringView
from services.keyring.reseal import needs_work, resealed
from services.keyring.sealing import TOKEN_SEAL_CONTEXT, SealingError, SecretBox, generate_kek, kek_id_of

SECRET = "AIza" + "x" * 35
PRESENTED = token_hash("kr-a-client-token")


def legacy_seal(kek: str, secret: str, key_id: str) -> str:
    """How a secret was sealed before KEKs had ids: base64(nonce + ciphertext), the key id as associated data."""
    nonce = os.urandom(12)
    return base64.b64encode(
        nonce + AESGCM(base64.b64decode(kek)).encrypt(nonce, secret.encode(), key_id.encode())
    ).decode()


def test_a_sealed_secret_names_the_kek_that_sealed_it() -> None:
    kek = generate_kek()
    box = SecretBox.from_base64(kek)
    sealed = box.seal(SECRET, "k-1")
    assert re.fullmatch(r"v2:kek-[0-9a-f]{12}:[A-Za-z0-9+/=]+", sealed)
    assert kek_id_of(sealed) == box.kek_id == SecretBox.from_base64(kek).kek_id  # a fingerprint: no configuration
    assert box.kek_id != SecretBox.from_base64(generate_kek()).kek_id
    assert box.open(sealed, "k-1") == SECRET
    assert box.is_current(sealed)


def test_a_secret_opens_only_with_its_kek_and_only_on_its_own_record() -> None:
    old, new = generate_kek(), generate_kek()
    sealed = SecretBox.from_base64(old).seal(SECRET, "k-1")
    with pytest.raises(SealingError, match=kek_id_of(sealed)):
        SecretBox.from_base64(new).open(sealed, "k-1")
    with pytest.raises(SealingError):
        SecretBox.from_base64(old).open(sealed, "k-2")  # copied onto another key's record
    rotating = SecretBox.from_base64(new, [old])
    assert rotating.open(sealed, "k-1") == SECRET
    assert not rotating.is_current(sealed)
    assert kek_id_of(rotating.seal(SECRET, "k-1")) == rotating.kek_id == SecretBox.from_base64(new).kek_id


def test_a_secret_sealed_before_kek_ids_opens_with_whichever_kek_fits() -> None:
    old, new = generate_kek(), generate_kek()
    sealed = legacy_seal(old, SECRET, "k-1")
    assert kek_id_of(sealed) == ""
    assert SecretBox.from_base64(new, [old]).open(sealed, "k-1") == SECRET
    with pytest.raises(SealingError):
        SecretBox.from_base64(new).open(sealed, "k-1")


def test_a_stored_token_hash_is_keyed_and_its_presented_hash_only_sealed() -> None:
    box = SecretBox.from_base64(generate_kek())
    token = box.key_token(ClientToken("t-1", "", "p"), PRESENTED)
    assert token.keyed and token.hash_key == box.kek_id
    assert token.token_hash != PRESENTED and PRESENTED not in token.sealed_hash
    assert box.presented_hash(token) == PRESENTED
    assert box.open(token.sealed_hash, TOKEN_SEAL_CONTEXT) == PRESENTED
    other = SecretBox.from_base64(generate_kek()).key_token(ClientToken("t-1", "", "p"), PRESENTED)
    assert other.token_hash != token.token_hash  # keyed: another deployment's key gives another value


def allocator_over(box: SecretBox | None, *tokens: ClientToken) -> Allocator:
    view = KeyringView()
    view.put_pool(Pool("p"))
    for token in tokens:
        view.put_token(token)
    return Allocator(view, LeaseBook("i"), lambda: 1, random.Random(1), box.tokens if box else None)


def test_a_token_is_found_by_its_presented_hash_never_by_its_stored_one() -> None:
    box = SecretBox.from_base64(generate_kek())
    token = box.key_token(ClientToken("t-1", "", "p"), PRESENTED)
    allocator = allocator_over(box, token)
    assert allocator.find_token(PRESENTED) == token
    assert allocator.find_token(token.token_hash) is None


def test_during_a_kek_rotation_tokens_keyed_under_either_kek_are_found() -> None:
    old, new = generate_kek(), generate_kek()
    under_old = SecretBox.from_base64(old).key_token(ClientToken("t-1", "", "p"), PRESENTED)
    other_presented = token_hash("kr-another-token")
    under_new = SecretBox.from_base64(new).key_token(ClientToken("t-2", "", "p"), other_presented)
    for box in (SecretBox.from_base64(new, [old]), SecretBox.from_base64(old, [new])):
        allocator = allocator_over(box, under_old, under_new)
        assert allocator.find_token(PRESENTED) == under_old
        assert allocator.find_token(other_presented) == under_new
    assert allocator_over(SecretBox.from_base64(new), under_old).find_token(PRESENTED) is None


def test_a_record_from_before_keyed_hashes_matches_its_bare_hash_only_under_the_switch_until_resealed() -> None:
    kek = generate_kek()
    box = SecretBox.from_base64(kek)
    legacy = ClientToken("t-" + PRESENTED[:12], PRESENTED, "p")
    # Refused by default: a bare SHA-256 is what anyone who can write the store would forge (issue 18, finding 1).
    assert allocator_over(box, legacy).find_token(PRESENTED) is None
    migrating = SecretBox.from_base64(kek, accept_unkeyed_tokens=True)
    assert allocator_over(migrating, legacy).find_token(PRESENTED) == legacy
    assert needs_work(box, legacy)
    keyed = resealed(box, legacy)
    assert isinstance(keyed, ClientToken)
    assert keyed.token_id == legacy.token_id and keyed.token_hash != PRESENTED and not needs_work(box, keyed)
    allocator = allocator_over(box, keyed)
    assert allocator.find_token(PRESENTED) == keyed
    assert allocator.find_token(keyed.token_hash) is None
    # A keyed record whose stored value happens to be presented never falls back to the bare lookup.
    assert allocator_over(box, keyed).find_token(keyed.token_hash) is None


def test_reseal_moves_tokens_and_secrets_to_the_current_kek() -> None:
    old, new = generate_kek(), generate_kek()
    token = SecretBox.from_base64(old).key_token(ClientToken("t-1", "", "p"), PRESENTED)
    box = SecretBox.from_base64(new, [old])
    assert needs_work(box, token)
    moved = resealed(box, token)
    assert isinstance(moved, ClientToken)
    assert moved.hash_key == box.kek_id and box.token_is_current(moved)
    assert SecretBox.from_base64(new).presented_hash(moved) == PRESENTED
    with pytest.raises(SealingError):
        resealed(SecretBox.from_base64(generate_kek()), token)
