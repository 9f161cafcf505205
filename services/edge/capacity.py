"""How many streams one edge process can hold: its file descriptors, and the upstream pool they allow.

Every request in flight holds two descriptors: the client's connection and
the upstream one. A Python process starts with the soft RLIMIT_NOFILE it
was given (often 1024: about 500 streams), whatever the hard limit allows;
Go programs raise it to the hard limit at start, and so does the edge
(``raise_nofile``, from ``__main__``). The upstream pool
(``EDGE_UPSTREAM_CONNECTION_LIMIT``) is then held to what the descriptors
allow (``upstream_connections``), so that past it a request waits for a
connection, or a new client waits in the listen backlog (asyncio pauses
accepting on EMFILE), rather than an upstream connect failing with EMFILE
and a healthy key being blamed for it.
"""

from __future__ import annotations

import logging
import resource
from typing import Final

log = logging.getLogger(__name__)

# Descriptors kept for everything but streams: listeners, keyring channels, gRPC's own, logs, files.
RESERVED_FDS: Final = 64


def raise_nofile() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit (as Go does at start); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # a hard limit the kernel refuses (above nr_open): keep the soft one
            return soft
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def upstream_connections(setting: int, nofile: int) -> int:
    """The upstream pool's size: ``setting``, at most half the descriptors left once RESERVED_FDS are kept."""
    if nofile == resource.RLIM_INFINITY:
        return setting
    return max(1, min(setting, (nofile - RESERVED_FDS) // 2))


def at_start(connection_limit: int) -> None:
    """Raise the soft limit; say once, at start, when the descriptors hold the upstream pool below the setting."""
    soft = raise_nofile()
    pool = upstream_connections(connection_limit, soft)
    if pool < connection_limit:
        log.warning(
            "RLIMIT_NOFILE is %d (the hard limit): %d upstream connections at most, not"
            " EDGE_UPSTREAM_CONNECTION_LIMIT=%d (two descriptors a stream); raise the process's nofile limit"
            " (ulimit -n, the container runtime's default) for more streams at once",
            soft, pool, connection_limit,
        )  # fmt: skip


def nofile() -> int:
    """The process's soft RLIMIT_NOFILE."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
