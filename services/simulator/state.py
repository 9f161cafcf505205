"""Mutable state of the Gemini simulator: per-key scripts, counts, recorded requests,
the project of each key and the project-scoped resources.

Plain Python on purpose (no aiohttp) so tests and benchmarks can drive it
directly, in process, without going through HTTP.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, get_args

from .live_sessions import LiveBook
from .quotas import PER_DAY_QUOTA_ID, PER_MINUTE_QUOTA_ID, SERVED_AS, QuotaBook
from .resources import ResourceStore, default_project

BehaviourKind = Literal[
    "ok",
    "rate_limit",
    "invalid_key",
    "permission_denied",
    "unauthenticated",
    "token_type_unsupported",
    "leaked_key",
    "service_disabled",
    "billing_disabled",
    "server_error",
    "overloaded",
    "timeout",
    "drop",
    "drop_mid_stream",
    "ip_blocked",  # 403 API_KEY_IP_ADDRESS_BLOCKED naming the key's project number (ErrorInfo consumer)
    "capacity_exhausted",  # 429 MODEL_CAPACITY_EXHAUSTED: Google's capacity, not the key's quota
]
BEHAVIOUR_KINDS: Final[frozenset[str]] = frozenset(get_args(BehaviourKind))

__all__ = ["PER_DAY_QUOTA_ID", "PER_MINUTE_QUOTA_ID", "Behaviour", "RecordedRequest", "SimulatorState"]
MAX_RECORDED_REQUESTS: Final = 10_000


def normalize_model(model: str | None) -> str | None:
    """Strip the `models/` prefix so `models/x` and `x` address the same model."""
    if model is None:
        return None
    return model[7:] if model.startswith("models/") else model


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One scripted reaction of the upstream to a single request.

    `kind` selects the reaction. The optional fields tune it:
    `retry_delay_s` (429 RetryInfo; None omits RetryInfo), `quota_id` (429
    QuotaFailure), `delay_s` (wait before answering, any kind),
    `chunk_delay_s` (wait between stream chunks), `status` (override the
    HTTP code of an error kind), `message` (override an error message) and
    `answer_text` (an `ok` generation answers this text instead of the echo).
    """

    kind: BehaviourKind = "ok"
    retry_delay_s: float | None = 30
    quota_id: str = PER_MINUTE_QUOTA_ID
    quota_value: str = "10"
    delay_s: float | None = None
    chunk_delay_s: float | None = None
    status: int | None = None
    message: str | None = None
    answer_text: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in BEHAVIOUR_KINDS:
            raise ValueError(f"unknown behaviour kind {self.kind!r}; expected one of {sorted(BEHAVIOUR_KINDS)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        """Build from the JSON form used by the HTTP control API (unknown fields rejected)."""
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, symmetric to `from_dict`."""
        return asdict(self)

    @classmethod
    def ok(cls, delay_s: float | None = None, chunk_delay_s: float | None = None) -> Behaviour:
        """Normal answer, optionally slowed down."""
        return cls("ok", delay_s=delay_s, chunk_delay_s=chunk_delay_s)

    @classmethod
    def rate_limit(cls, retry_delay_s: float | None = 30, quota_id: str = PER_MINUTE_QUOTA_ID) -> Behaviour:
        """429 RESOURCE_EXHAUSTED; use `quota_id=PER_DAY_QUOTA_ID` for a spent daily quota."""
        return cls("rate_limit", retry_delay_s=retry_delay_s, quota_id=quota_id)


OK: Final = Behaviour()


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as the simulator saw it, so tests can check what the proxy sent.

    `body` is byte-exact; header names are lower-cased; `model` is the
    normalized model name (no `models/` prefix) or None.
    """

    key: str | None
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    model: str | None


@dataclass(slots=True)
class _Step:
    behaviour: Behaviour
    model: str | None


@dataclass(slots=True)
class _KeyScript:
    steps: list[_Step] = field(default_factory=list)
    sticky: dict[str | None, Behaviour] = field(default_factory=dict)


class SimulatorState:
    """Scripts per key, request counters and a bounded log of requests."""

    def __init__(
        self,
        *,
        default_chunks: int = 3,
        default_delay_s: float = 0.0,
        default_chunk_delay_s: float = 0.0,
    ) -> None:
        self.default_chunks = default_chunks
        self.default_delay_s = default_delay_s
        self.default_chunk_delay_s = default_chunk_delay_s
        self._scripts: dict[str, _KeyScript] = {}
        self._counts: dict[str, int] = {}
        self._requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self._projects: dict[str, str] = {}
        #: Files, caches, batches, operations, interactions and upload sessions, per project.
        self.resources = ResourceStore()
        #: Seconds a batch, a long-running operation or a background interaction takes to finish.
        self.job_duration_s = 0.0
        #: Well-formed model names that nevertheless answer 404 (besides any name containing `no-such`).
        self.missing_models: set[str] = set()
        #: Per-(project, model) limits and their usage (nothing enforced until a rule is set).
        self.quotas = QuotaBook()
        #: Asked name -> the model that answers it (modelVersion, quotas and their errors are the served model's).
        self.served_as: dict[str, str] = dict(SERVED_AS)
        #: Live API sessions (per project), their cap, life and resumption handles.
        self.live = LiveBook()

    # -- projects --------------------------------------------------------

    def project_of(self, key: str) -> str:
        """The project `key` belongs to: as set with `set_project`, else one project per key (`sim-<hash>`)."""
        return self._projects.get(key) or default_project(key)

    def set_project(self, key: str, project: str | None) -> None:
        """Put `key` in `project` (None: back to its default project)."""
        if project is None:
            self._projects.pop(key, None)
        else:
            self._projects[key] = project

    def projects(self) -> dict[str, str]:
        """Keys with an explicitly set project."""
        return dict(self._projects)

    # -- scripting -------------------------------------------------------

    def script(self, key: str, *behaviours: Behaviour, model: str | None = None) -> None:
        """Append steps for `key`, consumed one per request (only for `model` if given)."""
        model = normalize_model(model)
        steps = self._scripts.setdefault(key, _KeyScript()).steps
        steps.extend(_Step(b, model) for b in behaviours)

    def set_sticky(self, key: str, behaviour: Behaviour | None, model: str | None = None) -> None:
        """Apply `behaviour` to every request of `key` once its steps are used up (None removes it)."""
        sticky = self._scripts.setdefault(key, _KeyScript()).sticky
        model = normalize_model(model)
        if behaviour is None:
            sticky.pop(model, None)
        else:
            sticky[model] = behaviour

    def clear(self, key: str | None = None) -> None:
        """Drop the scripts (steps and sticky) of one key, or of all keys."""
        if key is None:
            self._scripts.clear()
        else:
            self._scripts.pop(key, None)

    def next_behaviour(self, key: str, model: str | None) -> Behaviour:
        """Consume and return the behaviour for this request; `OK` when nothing is scripted."""
        script = self._scripts.get(key)
        if script is None:
            return OK
        model = normalize_model(model)
        for i, step in enumerate(script.steps):
            if step.model is None or step.model == model:
                del script.steps[i]
                return step.behaviour
        sticky = script.sticky
        if model is not None and model in sticky:
            return sticky[model]
        return sticky.get(None, OK)

    # -- accounting ------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        """Log a request and count it against its key (requests without a key are logged only)."""
        self._requests.append(request)
        if request.key is not None:
            self._counts[request.key] = self._counts.get(request.key, 0) + 1

    def count(self, key: str) -> int:
        """Requests seen for `key`, failed ones included."""
        return self._counts.get(key, 0)

    def counts(self) -> dict[str, int]:
        """Snapshot of all per-key counts."""
        return dict(self._counts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded requests, oldest first (at most the last 10,000)."""
        return list(self._requests)

    def last_requests(self, limit: int) -> list[RecordedRequest]:
        """The newest `limit` requests, oldest first, without copying the whole log."""
        if limit <= 0:
            return []
        n = len(self._requests)
        return [self._requests[i] for i in range(max(0, n - limit), n)]

    def reset(self) -> None:
        """Forget scripts, counts, recorded requests, project assignments and resources (defaults are kept)."""
        self._scripts.clear()
        self._counts.clear()
        self._requests.clear()
        self._projects.clear()
        self.resources.clear()
        self.missing_models.clear()
        self.quotas.clear()
        self.live.clear()
