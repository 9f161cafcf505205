"""gRPC keepalive and reconnect policy, one place for both ends: keyring's server and its clients (edge, admin).

A client pings a quiet connection every ``keepalive_s`` and gives it up when a
ping is not answered in ``keepalive_timeout_s`` (a replica gone without a FIN:
node lost, network cut). A server answers pings it finds too frequent with a
strike, and after ``MAX_PING_STRIKES`` strikes with GOAWAY ``too_many_pings``,
which drops every stream of the connection at once. gRPC's server default
accepts a ping without data only every 5 minutes: an edge pinging every 10 s
had its lease streams dropped after a few idle minutes (issue 13, finding 6).

The rule, checked nowhere at run time because the two ends are separate
processes (docs/configuration.md "gRPC keepalive"): every client's ``keepalive_s`` must be at
least the server's ``min_ping_interval_s``. Defaults: clients 20 s, server 5 s
(a factor four of margin for timers and restarts). Pings are allowed while no
call is open (``keepalive_permit_without_calls``) and without limit between two
data frames (``max_pings_without_data`` 0): a lease stream is idle for long
stretches and must stay checked.
"""

from __future__ import annotations

from typing import Final

# Clients (edge's lease streams, admin's channels): EDGE_KEYRING_KEEPALIVE_S, EDGE_KEYRING_KEEPALIVE_TIMEOUT_S.
CLIENT_KEEPALIVE_S: Final = 20.0
CLIENT_KEEPALIVE_TIMEOUT_S: Final = 10.0
# Keyring's server: KEYRING_GRPC_MIN_PING_INTERVAL_S (must not exceed any client's keepalive).
SERVER_MIN_PING_INTERVAL_S: Final = 5.0
# Pings closer than the minimum tolerated before GOAWAY (gRPC's default; 0 would be unlimited).
MAX_PING_STRIKES: Final = 2

Options = list[tuple[str, int]]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def client_keepalive(
    keepalive_s: float = CLIENT_KEEPALIVE_S, timeout_s: float = CLIENT_KEEPALIVE_TIMEOUT_S
) -> Options:
    """Channel options of a keyring client: ping every ``keepalive_s`` of silence, give up after ``timeout_s``."""
    return [
        ("grpc.keepalive_time_ms", _ms(keepalive_s)),
        ("grpc.keepalive_timeout_ms", _ms(timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


# A client's reconnect backoff to a replica that went away (gRPC's default grows to 120 s): a replica
# restarted in a few seconds (a rolling update, a killed pod) is reached again within MAX_RECONNECT_S, so
# the releases the edge keeps for it (owed, or counted but not yet durable) are delivered promptly.
MIN_RECONNECT_S: Final = 0.25
MAX_RECONNECT_S: Final = 2.0


def client_reconnect() -> Options:
    """Channel options of a keyring client: reconnect after MIN_RECONNECT_S, backing off to MAX_RECONNECT_S."""
    return [
        ("grpc.initial_reconnect_backoff_ms", _ms(MIN_RECONNECT_S)),
        ("grpc.min_reconnect_backoff_ms", _ms(MIN_RECONNECT_S)),
        ("grpc.max_reconnect_backoff_ms", _ms(MAX_RECONNECT_S)),
    ]


def server_keepalive(min_ping_interval_s: float = SERVER_MIN_PING_INTERVAL_S) -> Options:
    """Server options accepting a client's pings every ``min_ping_interval_s`` or slower, with or without calls."""
    return [
        # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS: its string is this one (the spelling
        # "grpc.http2.min_recv_ping_interval_without_data_ms" is silently ignored by gRPC core).
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(min_ping_interval_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
    ]
