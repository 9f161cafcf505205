"""A lease's client token, bound to its signed id (``Lease.token_tag``): a replica that counts a release of a lease
it does not hold (its granter went away) counts it for the token the release names only when the tag holds, so an
edge cannot move a call's usage to another tenant's token."""

from __future__ import annotations

from services.keyring.domain.lease_ids import LeaseSigner

KEY = b"k" * 32


def test_the_tag_of_the_granting_replica_vouches_for_the_token_on_any_replica_sharing_the_key() -> None:
    granter, other = LeaseSigner(KEY), LeaseSigner(KEY)
    lease_id = granter.sign("replica-a.x1.7", "k-1", "gemini-3.5-flash", 1000.0)
    tag = granter.token_tag(lease_id, "t-0123456789ab")
    assert other.vouched_token(lease_id, "t-0123456789ab", tag) == "t-0123456789ab"


def test_a_forged_or_misplaced_tag_names_no_token() -> None:
    signer = LeaseSigner(KEY)
    lease_id = signer.sign("replica-a.x1.7", "k-1", "gemini-3.5-flash", 1000.0)
    tag = signer.token_tag(lease_id, "t-0123456789ab")
    assert signer.vouched_token(lease_id, "t-ffffffffffff", tag) == ""  # another tenant's token
    assert signer.vouched_token(lease_id + "0", "t-0123456789ab", tag) == ""  # another lease
    assert signer.vouched_token(lease_id, "t-0123456789ab", "0" * 32) == ""  # a made-up tag
    assert signer.vouched_token(lease_id, "t-0123456789ab", "") == ""  # an edge that predates tags
    assert signer.vouched_token(lease_id, "t-" + "a" * 100, tag) == ""  # not a token id
    assert LeaseSigner(b"z" * 32).vouched_token(lease_id, "t-0123456789ab", tag) == ""  # another cluster's key
