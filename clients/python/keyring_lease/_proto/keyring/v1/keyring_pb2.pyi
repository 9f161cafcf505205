from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    ROUND_ROBIN: _ClassVar[Strategy]
    RANDOM: _ClassVar[Strategy]
    WEIGHTED: _ClassVar[Strategy]
    LEAST_LOADED: _ClassVar[Strategy]

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    ACTIVE: _ClassVar[KeyState]
    SUSPENDED: _ClassVar[KeyState]
    INVALID: _ClassVar[KeyState]
    DISABLED: _ClassVar[KeyState]
STRATEGY_UNSPECIFIED: Strategy
ROUND_ROBIN: Strategy
RANDOM: Strategy
WEIGHTED: Strategy
LEAST_LOADED: Strategy
KEY_STATE_UNSPECIFIED: KeyState
ACTIVE: KeyState
SUSPENDED: KeyState
INVALID: KeyState
DISABLED: KeyState

class RenewRequest(_message.Message):
    __slots__ = ("lease_id", "key_id", "model")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    key_id: str
    model: str
    def __init__(self, lease_id: _Optional[str] = ..., key_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class RenewResponse(_message.Message):
    __slots__ = ("held", "expires_at_ms")
    HELD_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    held: bool
    expires_at_ms: int
    def __init__(self, held: _Optional[bool] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class MintSessionTokenRequest(_message.Message):
    __slots__ = ("token_hash", "model", "ttl_ms", "uses")
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    token_hash: str
    model: str
    ttl_ms: int
    uses: int
    def __init__(self, token_hash: _Optional[str] = ..., model: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., uses: _Optional[int] = ...) -> None: ...

class MintSessionTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at_ms", "model", "uses")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at_ms: int
    model: str
    uses: int
    def __init__(self, token: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., model: _Optional[str] = ..., uses: _Optional[int] = ...) -> None: ...

class RedeemSessionTokenRequest(_message.Message):
    __slots__ = ("token", "model", "resumption")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESUMPTION_FIELD_NUMBER: _ClassVar[int]
    token: str
    model: str
    resumption: bool
    def __init__(self, token: _Optional[str] = ..., model: _Optional[str] = ..., resumption: _Optional[bool] = ...) -> None: ...

class RedeemSessionTokenResponse(_message.Message):
    __slots__ = ("pool", "model", "grant", "expires_at_ms")
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    model: str
    grant: str
    expires_at_ms: int
    def __init__(self, pool: _Optional[str] = ..., model: _Optional[str] = ..., grant: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class AcquireRequest(_message.Message):
    __slots__ = ("token_hash", "model", "exclude_key_ids", "affinity", "exclude_projects", "estimated_input_tokens", "binds", "session", "session_grant", "service_tier", "credit", "credits")
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PROJECTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BINDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_GRANT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIER_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    token_hash: str
    model: str
    exclude_key_ids: _containers.RepeatedScalarFieldContainer[str]
    affinity: _containers.RepeatedScalarFieldContainer[str]
    exclude_projects: _containers.RepeatedScalarFieldContainer[str]
    estimated_input_tokens: int
    binds: bool
    session: bool
    session_grant: str
    service_tier: str
    credit: bool
    credits: int
    def __init__(self, token_hash: _Optional[str] = ..., model: _Optional[str] = ..., exclude_key_ids: _Optional[_Iterable[str]] = ..., affinity: _Optional[_Iterable[str]] = ..., exclude_projects: _Optional[_Iterable[str]] = ..., estimated_input_tokens: _Optional[int] = ..., binds: _Optional[bool] = ..., session: _Optional[bool] = ..., session_grant: _Optional[str] = ..., service_tier: _Optional[str] = ..., credit: _Optional[bool] = ..., credits: _Optional[int] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "key_id", "secret", "project", "pool", "expires_at_ms", "egress_slot", "renew_every_ms", "token_id", "token_tag")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EGRESS_SLOT_FIELD_NUMBER: _ClassVar[int]
    RENEW_EVERY_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TAG_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    key_id: str
    secret: str
    project: str
    pool: str
    expires_at_ms: int
    egress_slot: int
    renew_every_ms: int
    token_id: str
    token_tag: str
    def __init__(self, lease_id: _Optional[str] = ..., key_id: _Optional[str] = ..., secret: _Optional[str] = ..., project: _Optional[str] = ..., pool: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., egress_slot: _Optional[int] = ..., renew_every_ms: _Optional[int] = ..., token_id: _Optional[str] = ..., token_tag: _Optional[str] = ...) -> None: ...

class AcquireResponse(_message.Message):
    __slots__ = ("lease", "allowed_models", "more_credits")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MORE_CREDITS_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    more_credits: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., allowed_models: _Optional[_Iterable[str]] = ..., more_credits: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("transport", "http_status", "error_status", "error_reason", "retry_delay_ms", "quota_violations", "latency_ms", "input_tokens", "output_tokens", "error_message", "consumer_project", "served_model", "estimated_input_tokens", "service_tier")
    class Transport(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TRANSPORT_OK: _ClassVar[Outcome.Transport]
        TRANSPORT_TIMEOUT: _ClassVar[Outcome.Transport]
        TRANSPORT_CONNECTION: _ClassVar[Outcome.Transport]
        TRANSPORT_CANCELLED: _ClassVar[Outcome.Transport]
        TRANSPORT_UNUSED: _ClassVar[Outcome.Transport]
    TRANSPORT_OK: Outcome.Transport
    TRANSPORT_TIMEOUT: Outcome.Transport
    TRANSPORT_CONNECTION: Outcome.Transport
    TRANSPORT_CANCELLED: Outcome.Transport
    TRANSPORT_UNUSED: Outcome.Transport
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_PROJECT_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIER_FIELD_NUMBER: _ClassVar[int]
    transport: Outcome.Transport
    http_status: int
    error_status: str
    error_reason: str
    retry_delay_ms: int
    quota_violations: _containers.RepeatedCompositeFieldContainer[QuotaViolation]
    latency_ms: int
    input_tokens: int
    output_tokens: int
    error_message: str
    consumer_project: str
    served_model: str
    estimated_input_tokens: int
    service_tier: str
    def __init__(self, transport: _Optional[_Union[Outcome.Transport, str]] = ..., http_status: _Optional[int] = ..., error_status: _Optional[str] = ..., error_reason: _Optional[str] = ..., retry_delay_ms: _Optional[int] = ..., quota_violations: _Optional[_Iterable[_Union[QuotaViolation, _Mapping]]] = ..., latency_ms: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., error_message: _Optional[str] = ..., consumer_project: _Optional[str] = ..., served_model: _Optional[str] = ..., estimated_input_tokens: _Optional[int] = ..., service_tier: _Optional[str] = ...) -> None: ...

class QuotaViolation(_message.Message):
    __slots__ = ("quota_id", "quota_metric", "dimensions", "quota_value", "future_quota_value")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUOTA_ID_FIELD_NUMBER: _ClassVar[int]
    QUOTA_METRIC_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_VALUE_FIELD_NUMBER: _ClassVar[int]
    FUTURE_QUOTA_VALUE_FIELD_NUMBER: _ClassVar[int]
    quota_id: str
    quota_metric: str
    dimensions: _containers.ScalarMap[str, str]
    quota_value: str
    future_quota_value: str
    def __init__(self, quota_id: _Optional[str] = ..., quota_metric: _Optional[str] = ..., dimensions: _Optional[_Mapping[str, str]] = ..., quota_value: _Optional[str] = ..., future_quota_value: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id", "outcome", "key_id", "model", "bind", "unbind", "counted_epoch", "kept_for_granter", "handover", "token_id", "token_tag")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BIND_FIELD_NUMBER: _ClassVar[int]
    UNBIND_FIELD_NUMBER: _ClassVar[int]
    COUNTED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEPT_FOR_GRANTER_FIELD_NUMBER: _ClassVar[int]
    HANDOVER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TAG_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    outcome: Outcome
    key_id: str
    model: str
    bind: _containers.RepeatedCompositeFieldContainer[ResourceBinding]
    unbind: _containers.RepeatedScalarFieldContainer[str]
    counted_epoch: int
    kept_for_granter: bool
    handover: bool
    token_id: str
    token_tag: str
    def __init__(self, lease_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, _Mapping]] = ..., key_id: _Optional[str] = ..., model: _Optional[str] = ..., bind: _Optional[_Iterable[_Union[ResourceBinding, _Mapping]]] = ..., unbind: _Optional[_Iterable[str]] = ..., counted_epoch: _Optional[int] = ..., kept_for_granter: _Optional[bool] = ..., handover: _Optional[bool] = ..., token_id: _Optional[str] = ..., token_tag: _Optional[str] = ...) -> None: ...

class ResourceBinding(_message.Message):
    __slots__ = ("name", "ttl_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ttl_ms: int
    def __init__(self, name: _Optional[str] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("known", "counted_epoch", "granter_alive")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    COUNTED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    GRANTER_ALIVE_FIELD_NUMBER: _ClassVar[int]
    known: bool
    counted_epoch: int
    granter_alive: bool
    def __init__(self, known: _Optional[bool] = ..., counted_epoch: _Optional[int] = ..., granter_alive: _Optional[bool] = ...) -> None: ...

class CheckTokenRequest(_message.Message):
    __slots__ = ("token_hash",)
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    token_hash: str
    def __init__(self, token_hash: _Optional[str] = ...) -> None: ...

class CheckTokenResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class BoundNamesRequest(_message.Message):
    __slots__ = ("token_hash", "names")
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    token_hash: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token_hash: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class BoundNamesResponse(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message", "retry_after_ms", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_after_ms: int
    reason: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class LeaseCall(_message.Message):
    __slots__ = ("id", "acquire", "release", "check_token", "report", "bound_names", "renew", "mint_session_token", "redeem_session_token", "traceparent")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CHECK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    BOUND_NAMES_FIELD_NUMBER: _ClassVar[int]
    RENEW_FIELD_NUMBER: _ClassVar[int]
    MINT_SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REDEEM_SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    id: int
    acquire: AcquireRequest
    release: ReleaseRequest
    check_token: CheckTokenRequest
    report: ReleaseRequest
    bound_names: BoundNamesRequest
    renew: RenewRequest
    mint_session_token: MintSessionTokenRequest
    redeem_session_token: RedeemSessionTokenRequest
    traceparent: str
    def __init__(self, id: _Optional[int] = ..., acquire: _Optional[_Union[AcquireRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., check_token: _Optional[_Union[CheckTokenRequest, _Mapping]] = ..., report: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., bound_names: _Optional[_Union[BoundNamesRequest, _Mapping]] = ..., renew: _Optional[_Union[RenewRequest, _Mapping]] = ..., mint_session_token: _Optional[_Union[MintSessionTokenRequest, _Mapping]] = ..., redeem_session_token: _Optional[_Union[RedeemSessionTokenRequest, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class LeaseResult(_message.Message):
    __slots__ = ("id", "acquire", "release", "error", "check_token", "bound_names", "renew", "mint_session_token", "redeem_session_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACQUIRE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BOUND_NAMES_FIELD_NUMBER: _ClassVar[int]
    RENEW_FIELD_NUMBER: _ClassVar[int]
    MINT_SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REDEEM_SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: int
    acquire: AcquireResponse
    release: ReleaseResponse
    error: StreamError
    check_token: CheckTokenResponse
    bound_names: BoundNamesResponse
    renew: RenewResponse
    mint_session_token: MintSessionTokenResponse
    redeem_session_token: RedeemSessionTokenResponse
    def __init__(self, id: _Optional[int] = ..., acquire: _Optional[_Union[AcquireResponse, _Mapping]] = ..., release: _Optional[_Union[ReleaseResponse, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., check_token: _Optional[_Union[CheckTokenResponse, _Mapping]] = ..., bound_names: _Optional[_Union[BoundNamesResponse, _Mapping]] = ..., renew: _Optional[_Union[RenewResponse, _Mapping]] = ..., mint_session_token: _Optional[_Union[MintSessionTokenResponse, _Mapping]] = ..., redeem_session_token: _Optional[_Union[RedeemSessionTokenResponse, _Mapping]] = ...) -> None: ...

class LeaseStreamRequest(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[LeaseCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[LeaseCall, _Mapping]]] = ...) -> None: ...

class LeaseStreamResponse(_message.Message):
    __slots__ = ("results", "durable_epoch", "members", "revoked_credits")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DURABLE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_CREDITS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LeaseResult]
    durable_epoch: int
    members: _containers.RepeatedScalarFieldContainer[str]
    revoked_credits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[LeaseResult, _Mapping]]] = ..., durable_epoch: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., revoked_credits: _Optional[_Iterable[str]] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("rate_limit_cooldown_ms", "rate_limit_max_cooldown_ms", "server_error_cooldown_ms", "server_error_max_cooldown_ms", "forbidden_threshold", "max_in_flight", "requests_per_minute", "lease_ttl_ms", "suspend_ms", "quota_requests_per_minute", "quota_requests_per_day", "quota_input_tokens_per_minute", "live_sessions_per_project", "live_sessions_per_key", "live_sessions_per_token")
    RATE_LIMIT_COOLDOWN_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_MAX_COOLDOWN_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_ERROR_COOLDOWN_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_ERROR_MAX_COOLDOWN_MS_FIELD_NUMBER: _ClassVar[int]
    FORBIDDEN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_MS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    QUOTA_REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    QUOTA_INPUT_TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    LIVE_SESSIONS_PER_PROJECT_FIELD_NUMBER: _ClassVar[int]
    LIVE_SESSIONS_PER_KEY_FIELD_NUMBER: _ClassVar[int]
    LIVE_SESSIONS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rate_limit_cooldown_ms: int
    rate_limit_max_cooldown_ms: int
    server_error_cooldown_ms: int
    server_error_max_cooldown_ms: int
    forbidden_threshold: int
    max_in_flight: int
    requests_per_minute: int
    lease_ttl_ms: int
    suspend_ms: int
    quota_requests_per_minute: int
    quota_requests_per_day: int
    quota_input_tokens_per_minute: int
    live_sessions_per_project: int
    live_sessions_per_key: int
    live_sessions_per_token: int
    def __init__(self, rate_limit_cooldown_ms: _Optional[int] = ..., rate_limit_max_cooldown_ms: _Optional[int] = ..., server_error_cooldown_ms: _Optional[int] = ..., server_error_max_cooldown_ms: _Optional[int] = ..., forbidden_threshold: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., requests_per_minute: _Optional[int] = ..., lease_ttl_ms: _Optional[int] = ..., suspend_ms: _Optional[int] = ..., quota_requests_per_minute: _Optional[int] = ..., quota_requests_per_day: _Optional[int] = ..., quota_input_tokens_per_minute: _Optional[int] = ..., live_sessions_per_project: _Optional[int] = ..., live_sessions_per_key: _Optional[int] = ..., live_sessions_per_token: _Optional[int] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("name", "allowed_models", "strategy", "policy", "description", "created_at_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    strategy: Strategy
    policy: Policy
    description: str
    created_at_ms: int
    def __init__(self, name: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., description: _Optional[str] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class KeyInput(_message.Message):
    __slots__ = ("secret", "project", "tier", "weight", "tags", "note", "billing_account", "billing_tier")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    BILLING_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BILLING_TIER_FIELD_NUMBER: _ClassVar[int]
    secret: str
    project: str
    tier: int
    weight: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    note: str
    billing_account: str
    billing_tier: int
    def __init__(self, secret: _Optional[str] = ..., project: _Optional[str] = ..., tier: _Optional[int] = ..., weight: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ..., billing_account: _Optional[str] = ..., billing_tier: _Optional[int] = ...) -> None: ...

class Cooldown(_message.Message):
    __slots__ = ("model", "scope", "reason", "until_ms", "strikes", "asked_model")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    STRIKES_FIELD_NUMBER: _ClassVar[int]
    ASKED_MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    scope: str
    reason: str
    until_ms: int
    strikes: int
    asked_model: str
    def __init__(self, model: _Optional[str] = ..., scope: _Optional[str] = ..., reason: _Optional[str] = ..., until_ms: _Optional[int] = ..., strikes: _Optional[int] = ..., asked_model: _Optional[str] = ...) -> None: ...

class LastError(_message.Message):
    __slots__ = ("http_status", "status", "reason", "message", "at_ms")
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    http_status: int
    status: str
    reason: str
    message: str
    at_ms: int
    def __init__(self, http_status: _Optional[int] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., at_ms: _Optional[int] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("key_id", "mask", "pool", "project", "tier", "weight", "tags", "note", "state", "cooldowns", "consecutive_failures", "last_error", "created_at_ms", "state_until_ms", "last_used_ms", "kind", "billing_account", "billing_tier", "project_number", "project_warning")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COOLDOWNS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BILLING_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BILLING_TIER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PROJECT_WARNING_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    mask: str
    pool: str
    project: str
    tier: int
    weight: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    note: str
    state: KeyState
    cooldowns: _containers.RepeatedCompositeFieldContainer[Cooldown]
    consecutive_failures: int
    last_error: LastError
    created_at_ms: int
    state_until_ms: int
    last_used_ms: int
    kind: str
    billing_account: str
    billing_tier: int
    project_number: str
    project_warning: str
    def __init__(self, key_id: _Optional[str] = ..., mask: _Optional[str] = ..., pool: _Optional[str] = ..., project: _Optional[str] = ..., tier: _Optional[int] = ..., weight: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ..., cooldowns: _Optional[_Iterable[_Union[Cooldown, _Mapping]]] = ..., consecutive_failures: _Optional[int] = ..., last_error: _Optional[_Union[LastError, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., state_until_ms: _Optional[int] = ..., last_used_ms: _Optional[int] = ..., kind: _Optional[str] = ..., billing_account: _Optional[str] = ..., billing_tier: _Optional[int] = ..., project_number: _Optional[str] = ..., project_warning: _Optional[str] = ...) -> None: ...

class KeyFilter(_message.Message):
    __slots__ = ("pool", "state", "cooling_model", "project", "tier", "tag", "text", "page_size", "page_token")
    POOL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COOLING_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pool: str
    state: KeyState
    cooling_model: str
    project: str
    tier: int
    tag: str
    text: str
    page_size: int
    page_token: str
    def __init__(self, pool: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ..., cooling_model: _Optional[str] = ..., project: _Optional[str] = ..., tier: _Optional[int] = ..., tag: _Optional[str] = ..., text: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "name", "pool", "created_at_ms", "expires_at_ms", "revoked", "requests_per_minute", "prefix", "last_used_ms", "budgets")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_MS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    name: str
    pool: str
    created_at_ms: int
    expires_at_ms: int
    revoked: bool
    requests_per_minute: int
    prefix: str
    last_used_ms: int
    budgets: _containers.RepeatedCompositeFieldContainer[TokenBudget]
    def __init__(self, token_id: _Optional[str] = ..., name: _Optional[str] = ..., pool: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., expires_at_ms: _Optional[int] = ..., revoked: _Optional[bool] = ..., requests_per_minute: _Optional[int] = ..., prefix: _Optional[str] = ..., last_used_ms: _Optional[int] = ..., budgets: _Optional[_Iterable[_Union[TokenBudget, _Mapping]]] = ...) -> None: ...

class TokenBudget(_message.Message):
    __slots__ = ("model", "requests_per_minute", "requests_per_day", "tokens_per_minute", "tokens_per_day")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    model: str
    requests_per_minute: int
    requests_per_day: int
    tokens_per_minute: int
    tokens_per_day: int
    def __init__(self, model: _Optional[str] = ..., requests_per_minute: _Optional[int] = ..., requests_per_day: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., tokens_per_day: _Optional[int] = ...) -> None: ...

class VerifyKeysRequest(_message.Message):
    __slots__ = ("key_ids", "all_unhealthy", "pool")
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_UNHEALTHY_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    key_ids: _containers.RepeatedScalarFieldContainer[str]
    all_unhealthy: bool
    pool: str
    def __init__(self, key_ids: _Optional[_Iterable[str]] = ..., all_unhealthy: _Optional[bool] = ..., pool: _Optional[str] = ...) -> None: ...

class VerifyResult(_message.Message):
    __slots__ = ("key_id", "ok", "http_status", "error_status", "error_reason", "state")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    ok: bool
    http_status: int
    error_status: str
    error_reason: str
    state: KeyState
    def __init__(self, key_id: _Optional[str] = ..., ok: _Optional[bool] = ..., http_status: _Optional[int] = ..., error_status: _Optional[str] = ..., error_reason: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ...) -> None: ...

class VerifyKeysResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VerifyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[VerifyResult, _Mapping]]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("pool", "window_s")
    POOL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    pool: str
    window_s: int
    def __init__(self, pool: _Optional[str] = ..., window_s: _Optional[int] = ...) -> None: ...

class UsageFigures(_message.Message):
    __slots__ = ("requests", "errors", "input_tokens", "output_tokens", "unknown")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    unknown: int
    def __init__(self, requests: _Optional[int] = ..., errors: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., unknown: _Optional[int] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("id", "pool", "figures")
    ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    id: str
    pool: str
    figures: UsageFigures
    def __init__(self, id: _Optional[str] = ..., pool: _Optional[str] = ..., figures: _Optional[_Union[UsageFigures, _Mapping]] = ...) -> None: ...

class UsagePoint(_message.Message):
    __slots__ = ("start_ms", "pool", "figures", "errors_by_kind", "requests_by_tier")
    class ErrorsByKindEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RequestsByTierEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    START_MS_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_BY_KIND_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_BY_TIER_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    pool: str
    figures: UsageFigures
    errors_by_kind: _containers.ScalarMap[str, int]
    requests_by_tier: _containers.ScalarMap[str, int]
    def __init__(self, start_ms: _Optional[int] = ..., pool: _Optional[str] = ..., figures: _Optional[_Union[UsageFigures, _Mapping]] = ..., errors_by_kind: _Optional[_Mapping[str, int]] = ..., requests_by_tier: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("window_s", "keys", "tokens", "pools", "series", "bucket_s")
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    BUCKET_S_FIELD_NUMBER: _ClassVar[int]
    window_s: int
    keys: _containers.RepeatedCompositeFieldContainer[UsageRow]
    tokens: _containers.RepeatedCompositeFieldContainer[UsageRow]
    pools: _containers.RepeatedCompositeFieldContainer[UsageRow]
    series: _containers.RepeatedCompositeFieldContainer[UsagePoint]
    bucket_s: int
    def __init__(self, window_s: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., tokens: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., pools: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[UsagePoint, _Mapping]]] = ..., bucket_s: _Optional[int] = ...) -> None: ...

class ListQuotasRequest(_message.Message):
    __slots__ = ("pool", "project")
    POOL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    pool: str
    project: str
    def __init__(self, pool: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class QuotaRow(_message.Message):
    __slots__ = ("pool", "project", "model", "metric", "limit", "source", "learnt_at_ms", "used", "replica_share", "remaining", "resets_at_ms", "service_tier")
    POOL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LEARNT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REPLICA_SHARE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TIER_FIELD_NUMBER: _ClassVar[int]
    pool: str
    project: str
    model: str
    metric: str
    limit: int
    source: str
    learnt_at_ms: int
    used: int
    replica_share: int
    remaining: int
    resets_at_ms: int
    service_tier: str
    def __init__(self, pool: _Optional[str] = ..., project: _Optional[str] = ..., model: _Optional[str] = ..., metric: _Optional[str] = ..., limit: _Optional[int] = ..., source: _Optional[str] = ..., learnt_at_ms: _Optional[int] = ..., used: _Optional[int] = ..., replica_share: _Optional[int] = ..., remaining: _Optional[int] = ..., resets_at_ms: _Optional[int] = ..., service_tier: _Optional[str] = ...) -> None: ...

class ListQuotasResponse(_message.Message):
    __slots__ = ("quotas",)
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    quotas: _containers.RepeatedCompositeFieldContainer[QuotaRow]
    def __init__(self, quotas: _Optional[_Iterable[_Union[QuotaRow, _Mapping]]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("at_ms", "actor", "action", "target", "detail")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    actor: str
    action: str
    target: str
    detail: str
    def __init__(self, at_ms: _Optional[int] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class CreatePoolRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    def __init__(self, pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ...) -> None: ...

class UpdatePoolRequest(_message.Message):
    __slots__ = ("pool", "update_fields")
    POOL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    update_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., update_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeletePoolResponse(_message.Message):
    __slots__ = ("keys_deleted", "tokens_deleted")
    KEYS_DELETED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_DELETED_FIELD_NUMBER: _ClassVar[int]
    keys_deleted: int
    tokens_deleted: int
    def __init__(self, keys_deleted: _Optional[int] = ..., tokens_deleted: _Optional[int] = ...) -> None: ...

class AddKeysRequest(_message.Message):
    __slots__ = ("pool", "keys")
    POOL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    keys: _containers.RepeatedCompositeFieldContainer[KeyInput]
    def __init__(self, pool: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[KeyInput, _Mapping]]] = ...) -> None: ...

class AddKeyResult(_message.Message):
    __slots__ = ("index", "key_id", "mask", "status", "message")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[AddKeyResult.Status]
        ADDED: _ClassVar[AddKeyResult.Status]
        DUPLICATE: _ClassVar[AddKeyResult.Status]
        MALFORMED: _ClassVar[AddKeyResult.Status]
    STATUS_UNSPECIFIED: AddKeyResult.Status
    ADDED: AddKeyResult.Status
    DUPLICATE: AddKeyResult.Status
    MALFORMED: AddKeyResult.Status
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    key_id: str
    mask: str
    status: AddKeyResult.Status
    message: str
    def __init__(self, index: _Optional[int] = ..., key_id: _Optional[str] = ..., mask: _Optional[str] = ..., status: _Optional[_Union[AddKeyResult.Status, str]] = ..., message: _Optional[str] = ...) -> None: ...

class AddKeysResponse(_message.Message):
    __slots__ = ("results", "added")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddKeyResult]
    added: int
    def __init__(self, results: _Optional[_Iterable[_Union[AddKeyResult, _Mapping]]] = ..., added: _Optional[int] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: KeyFilter
    def __init__(self, filter: _Optional[_Union[KeyFilter, _Mapping]] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token", "total")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    next_page_token: str
    total: int
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("key_id", "changes", "update_fields")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    changes: KeyInput
    update_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., changes: _Optional[_Union[KeyInput, _Mapping]] = ..., update_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class SetKeyStateRequest(_message.Message):
    __slots__ = ("key_id", "action")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[SetKeyStateRequest.Action]
        ENABLE: _ClassVar[SetKeyStateRequest.Action]
        DISABLE: _ClassVar[SetKeyStateRequest.Action]
        REVIVE: _ClassVar[SetKeyStateRequest.Action]
    ACTION_UNSPECIFIED: SetKeyStateRequest.Action
    ENABLE: SetKeyStateRequest.Action
    DISABLE: SetKeyStateRequest.Action
    REVIVE: SetKeyStateRequest.Action
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    action: SetKeyStateRequest.Action
    def __init__(self, key_id: _Optional[str] = ..., action: _Optional[_Union[SetKeyStateRequest.Action, str]] = ...) -> None: ...

class DeleteKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class DeleteKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("pool", "name", "expires_at_ms", "requests_per_minute", "budgets")
    POOL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    pool: str
    name: str
    expires_at_ms: int
    requests_per_minute: int
    budgets: _containers.RepeatedCompositeFieldContainer[TokenBudget]
    def __init__(self, pool: _Optional[str] = ..., name: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., requests_per_minute: _Optional[int] = ..., budgets: _Optional[_Iterable[_Union[TokenBudget, _Mapping]]] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("info", "token")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    info: TokenInfo
    token: str
    def __init__(self, info: _Optional[_Union[TokenInfo, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RotateTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class UpdateTokenRequest(_message.Message):
    __slots__ = ("token_id", "name", "requests_per_minute", "replace_budgets", "budgets")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_BUDGETS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    name: str
    requests_per_minute: int
    replace_budgets: bool
    budgets: _containers.RepeatedCompositeFieldContainer[TokenBudget]
    def __init__(self, token_id: _Optional[str] = ..., name: _Optional[str] = ..., requests_per_minute: _Optional[int] = ..., replace_budgets: _Optional[bool] = ..., budgets: _Optional[_Iterable[_Union[TokenBudget, _Mapping]]] = ...) -> None: ...

class ExportConfigRequest(_message.Message):
    __slots__ = ("include_secrets_in_clear",)
    INCLUDE_SECRETS_IN_CLEAR_FIELD_NUMBER: _ClassVar[int]
    include_secrets_in_clear: bool
    def __init__(self, include_secrets_in_clear: _Optional[bool] = ...) -> None: ...

class ExportConfigResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    def __init__(self, document: _Optional[bytes] = ...) -> None: ...

class ImportConfigRequest(_message.Message):
    __slots__ = ("document", "keep_client_tokens")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    KEEP_CLIENT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    keep_client_tokens: bool
    def __init__(self, document: _Optional[bytes] = ..., keep_client_tokens: _Optional[bool] = ...) -> None: ...

class ImportConfigResponse(_message.Message):
    __slots__ = ("pools", "keys", "tokens")
    POOLS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    pools: int
    keys: int
    tokens: int
    def __init__(self, pools: _Optional[int] = ..., keys: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class RevokeSessionRequest(_message.Message):
    __slots__ = ("session_hash", "expires_at_ms")
    SESSION_HASH_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    session_hash: str
    expires_at_ms: int
    def __init__(self, session_hash: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class RevokeSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckSessionRequest(_message.Message):
    __slots__ = ("session_hash",)
    SESSION_HASH_FIELD_NUMBER: _ClassVar[int]
    session_hash: str
    def __init__(self, session_hash: _Optional[str] = ...) -> None: ...

class CheckSessionResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...
