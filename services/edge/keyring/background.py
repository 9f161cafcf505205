"""Work that belongs to no request (stream readers, reconnects, owed releases re-sent, resolution, handovers).

Started with an empty ``contextvars.Context``: a task or timer would
otherwise inherit the context of whichever request happened to start it,
trace included, and a stream-break warning an hour later would carry that
client's trace id (issue 19, finding 5).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def detached_task(coroutine: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
    """A task outside any request's context (no trace, no request-scoped variable)."""
    return asyncio.get_running_loop().create_task(coroutine, name=name, context=contextvars.Context())


def detached_later(delay_s: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
    """``callback`` after ``delay_s``, outside any request's context."""
    return asyncio.get_running_loop().call_later(delay_s, callback, context=contextvars.Context())
