"""Releases one replica is owed: kept until keyring answers them, and until their usage is durable.

The rules, per replica (the slot of a lease lives on the replica that granted it):

- a release sent (or queued) on the stream is kept until keyring answers it;
- a release answered with a usage epoch (``counted_epoch``) is kept until the
  replica says that epoch is in its store (``durable_epoch`` on its replies):
  a replica killed before its usage flush loses no count, because its
  successor counts the releases whose epoch it never wrote (keyring ``ledger.py``);
- when the stream breaks, both kinds become owed (the older first), and so are
  releases delivered elsewhere while the replica was away (``owe``); owed
  releases are re-sent on the next stream (``transport.LeaseStream`` takes them);
- a release re-sent after its bindings were committed carries none (``plain``):
  it counts, it does not bind again;
- at most ``max_owed`` are kept (the oldest dropped first: keyring reclaims
  the slots of a broken stream's leases itself, after its grace).

Plain bookkeeping on protobuf messages: no I/O, no event loop.
"""

from __future__ import annotations

import collections
import logging

from services.common.proto.keyring.v1 import keyring_pb2 as pb

log = logging.getLogger(__name__)


def plain(call: pb.LeaseCall) -> pb.LeaseCall:
    """A copy of a release call to re-send: no bindings (they were committed elsewhere, or refused)."""
    copy = pb.LeaseCall()
    copy.CopyFrom(call)
    copy.release.ClearField("bind")
    copy.release.ClearField("unbind")
    copy.release.kept_for_granter = False
    return copy


class KeptReleases:
    """What one replica's stream has not been able to forget yet (module docstring: the rules)."""

    def __init__(self, address: str, max_owed: int = 10_000) -> None:
        self.address = address
        self._max_owed = max_owed
        self._unanswered: dict[int, pb.LeaseCall] = {}  # sent or queued on this stream, not answered yet
        self._owed: collections.deque[pb.LeaseCall] = collections.deque()
        self._counted: collections.deque[pb.LeaseCall] = collections.deque()  # answered, counted, not durable yet
        self._durable = 0  # the replica's usage epoch known to be in its store
        self.dropped = 0  # releases dropped over the bound

    @property
    def owed(self) -> int:
        """Releases waiting for this replica's stream to come back."""
        return len(self._owed)

    @property
    def unconfirmed(self) -> int:
        """Releases counted in a usage epoch this replica has not said is written."""
        return len(self._counted)

    def sent(self, call: pb.LeaseCall) -> None:
        """A call went on the stream with nobody waiting for its reply: kept until answered."""
        self._unanswered[call.id] = call

    def answered(self, result: pb.LeaseResult) -> None:
        """Keyring answered a call sent with ``sent``: forgotten, or kept until its usage epoch is durable."""
        sent = self._unanswered.pop(result.id, None)
        if sent is not None:
            self.keep_counted(sent, result)

    def keep_counted(self, call: pb.LeaseCall, result: pb.LeaseResult) -> None:
        """Keep a release counted in a usage epoch not yet durable (bounded like the owed ones)."""
        epoch = result.release.counted_epoch if result.HasField("release") else 0
        if epoch > self._durable and call.HasField("release"):
            if call.release.bind or call.release.unbind:
                call = plain(call)  # its bindings are committed: a re-send counts, it does not bind again
            call.release.counted_epoch = epoch
            self._counted.append(call)
            if len(self._counted) > self._max_owed:
                self._counted.popleft()
                self.dropped += 1

    def forget_durable(self, epoch: int) -> None:
        """The replica wrote its usage up to ``epoch``: the releases counted in it need no keeping."""
        if epoch > self._durable:
            self._durable = epoch
            self._counted = collections.deque(c for c in self._counted if c.release.counted_epoch > epoch)

    def owe(self, call: pb.LeaseCall) -> None:
        """Keep a release for this replica until its stream is back (bounded, the oldest dropped)."""
        self._owed.append(call)
        while len(self._owed) > self._max_owed:
            self._owed.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d releases owed to %s dropped (keyring reclaims their slots)", self.dropped, self.address)

    def broke(self) -> None:
        """The stream broke: counted-but-not-durable, then unanswered releases become owed, before later ones."""
        if not self._unanswered and not self._counted:
            return
        unanswered = [*self._counted, *self._unanswered.values()]  # the replica may have died before writing them
        self._unanswered.clear()
        self._counted.clear()
        self._durable = 0  # the next stream may reach another instance, with epochs of its own
        self._owed.extendleft(reversed(unanswered))  # before those owed since: the older first
        while len(self._owed) > self._max_owed:
            self._owed.popleft()
            self.dropped += 1

    def take_oldest(self) -> pb.LeaseCall:
        """The oldest owed release (there is one), taken to be re-sent alone: a probe of a replica not answering."""
        return self._owed.popleft()

    def take_owed(self) -> list[pb.LeaseCall]:
        """The owed releases, handed over (to be re-sent, or to another replica when this one is gone)."""
        owed = list(self._owed)
        self._owed.clear()
        return owed
