"""The OpenAPI 3.1 document of the admin API, built in this one place and served at /openapi.json.

Request bodies are the JSON Schemas of the validating models in ``schemas``
(so the spec and the checks cannot disagree); answers are described here.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, Final

from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import core_schema

from . import schemas as s

JSON: Final = "application/json"
REF: Final = "#/components/schemas/{model}"


class _NoNull(GenerateJsonSchema):
    """Optional request fields are documented as optional, not as nullable: ``null`` is refused."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> dict[str, Any]:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> dict[str, Any]:
        generated = super().default_schema(schema)
        if generated.get("default", ...) is None:
            generated.pop("default")
        return generated


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


_TIME = {"type": ["string", "null"], "format": "date-time"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_ROLE = {"type": "string", "enum": ["viewer", "operator"], "description": "viewer: reads only; operator: changes"}
_CAN_EXPORT = {"type": "boolean", "description": "may export upstream secrets in clear (an operator with +export)"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _answer_schemas() -> dict[str, Any]:
    policy = {name: (_INT if name in ("forbidden_threshold", "max_in_flight", "requests_per_minute")
                     or name.startswith(("quota_", "live_sessions_")) else _NUM)
              for name in s.PolicyInput.model_fields}
    usage_row = _object({"id": _string(), "pool": _string(), "requests": _INT, "errors": _INT,
                         "input_tokens": _INT, "output_tokens": _INT, "unknown": _INT})
    states = [state.value for state in s.KeyStateName]
    return {
        "ErrorBody": _object({
            "code": {"type": "integer", "description": "the HTTP status"},
            "status": _string(description="INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, FAILED_PRECONDITION..."),
            "message": _string(),
        }),
        "Error": _object({"error": ref("ErrorBody")}),
        "Policy": _object(policy),
        "Pool": _object({
            "name": _string(), "description": _string(), "allowed_models": {"type": "array", "items": _string()},
            "strategy": _string(enum=[strategy.value for strategy in s.Strategy]), "policy": ref("Policy"),
            "created_at": _TIME,
        }),
        "PoolList": _object({"pools": {"type": "array", "items": ref("Pool")}}),
        "PoolDeleted": _object({"deleted": _BOOL, "keys_deleted": _INT, "tokens_deleted": _INT}),
        "Overview": _object({
            "usage_available": _BOOL,
            "pools": {"type": "array", "items": _object({
                "name": _string(), "strategy": _string(), "tokens": _INT,
                "requests_last_hour": _INT, "errors_last_hour": _INT,
                "keys": _object({name: _INT for name in ["total", *states, "cooling"]}),
            })},
        }),
        "Cooldown": _object({
            "model": _string(description="the model that answered (a retired name's or an alias's served model)"),
            "asked_model": _string(description="the name the call asked for, when another model answered; else \"\""),
            "scope": _string(description="key, project or account (a billing account)"),
            "reason": _string(description="rate_limit, daily_quota, server_error, spend_limit, billing_depleted..."),
            "until": _TIME, "seconds_left": {"type": "number", "minimum": 0}, "strikes": _INT,
        }),
        "LastError": _object({"http_status": _INT, "status": _string(), "reason": _string(),
                              "message": _string(), "at": _TIME}),
        "Key": _object({
            "key_id": _string(), "mask": _string(description="AQ.A...9fZk or AIza...x4Q2: never the secret"),
            "kind": _string(enum=["auth", "standard", "other"],
                            description="auth: an AQ. key (what AI Studio issues); standard: an AIza key (retired "
                                        "from September 2026); other: accepted under a custom KEYRING_KEY_PATTERN"),
            "pool": _string(), "project": _string(), "tier": _INT, "weight": _INT,
            "tags": {"type": "array", "items": _string()}, "note": _string(),
            "billing_account": _string(description="the Google billing account of the key's project (\"\": unknown)"),
            "billing_tier": {**_INT, "description": "the billing account's Gemini tier (1-3; 0 unknown): priority "
                             "calls (service_tier) go only to Tier 2/3 keys"},
            "project_number": _string(description="the project number Google named for this key (ErrorInfo "
                                                   "consumer), learnt; \"\" until an answer names it"),
            "project_warning": _string(description="why project_number disagrees with project; \"\" if it does not"),
            "state": _string(enum=[*states, "unknown"]), "state_until": _TIME,
            "cooldowns": {"type": "array", "items": ref("Cooldown")},
            "consecutive_failures": _INT, "last_error": {"oneOf": [ref("LastError"), {"type": "null"}]},
            "created_at": _TIME, "last_used": _TIME,
        }),
        "KeyList": _object({"keys": {"type": "array", "items": ref("Key")},
                            "next_page_token": {"type": ["string", "null"]}, "total": _INT}),
        "KeyDeleted": _object({"deleted": _BOOL, "key_id": _string()}),
        "AddKeysResult": _object({
            "added": _INT, "duplicate": _INT, "malformed": _INT,
            "results": {"type": "array", "items": _object({
                "index": _INT, "status": _string(enum=["added", "duplicate", "malformed", "unknown"]),
                "key_id": {"type": ["string", "null"]}, "mask": _string(), "message": _string(),
            })},
        }),
        "VerifyResult": _object({"key_id": _string(), "ok": _BOOL, "http_status": _INT, "error_status": _string(),
                                 "error_reason": _string(), "state": _string(enum=[*states, "unknown"])}),
        "VerifyUnhealthyResult": _object({"results": {"type": "array", "items": ref("VerifyResult")},
                                          "checked": _INT, "ok": _INT}),
        "BulkResult": _object({
            "action": _string(enum=[action.value for action in s.BulkAction]),
            "succeeded": _INT, "failed": _INT,
            "results": {"type": "array", "items": {"oneOf": [ref("VerifyResult"), _object({
                "key_id": _string(), "ok": _BOOL, "state": {"type": ["string", "null"]},
                "error": {"oneOf": [{"type": "null"}, ref("ErrorBody")]},
            })]}},
        }),
        "UsageRow": usage_row,
        "QuotaRow": _object({
            "pool": _string(), "project": _string(), "model": _string(),
            "metric": _string(enum=["requests_per_minute", "requests_per_day", "input_tokens_per_minute",
                                    "input_tokens_per_day"]),
            "limit": _INT, "source": _string(enum=["learnt", "operator"]), "learnt_at": _TIME,
            "used": {**_INT, "description": "in the current window, counted by the answering keyring replica"},
            "replica_share": {**_INT, "description": "that replica's part of the limit (split across live replicas)"},
            "remaining": _INT, "resets_at": _TIME,
            "service_tier": _string(enum=["standard", "flex", "priority"], description="the class whose own limit "
                                    "this is (issue 21): model is then \"<model>@flex\" or \"<model>@priority\""),
        }),
        "QuotaList": _object({"quotas": {"type": "array", "items": ref("QuotaRow")}}),
        "PoolOverview": _object({
            "pool": _string(), "window_s": _INT, "bucket_s": {**_INT, "description": "each series point's length"},
            "requests": _INT, "errors": _INT,
            "series": {"type": "array", "description": "every bucket of the last hour, oldest first (every keyring "
                       "replica's counts, from the usage buckets in etcd)",
                       "items": _object({"start": _TIME, "requests": _INT, "errors": _INT, "errors_by_kind": {
                           "type": "object", "additionalProperties": _INT,
                           "description": "failed calls by the shared classifier's kind (rate_limited, "
                           "upstream_trouble, key_invalid...); other: counted before kinds were recorded"},
                           "requests_by_tier": {"type": "object", "additionalProperties": _INT,
                                                "description": "calls of a service class other than standard "
                                                "(flex, priority), by class"}})},
            "keys_by_state": _object({name: _INT for name in states}),
            "keys_cooling": _INT,
            "cooldowns_by_cause": {"type": "object", "additionalProperties": _INT,
                                   "description": "cooldowns in force by reason (a key cooling for two models: two)"},
            "quotas": {"type": "array", "description": "known limits, the least headroom first",
                       "items": {"allOf": [ref("QuotaRow"), _object({"headroom_pct": {
                           **_NUM, "description": "remaining as a share of the replica's share, 0-100"}})]}},
            "busiest_tokens": {"type": "array", "description": "up to five, by requests in the last hour",
                               "items": _object({"token_id": _string(), "name": _string(), "requests": _INT,
                                                 "errors": _INT})},
            "billing_accounts": {"type": "array", "description": "the pool's billing accounts (given per key; "
                                 "\"\": keys with none given), a 402 or a spend limit cools every project of one",
                                 "items": _object({
                                     "account": _string(), "tier": {**_INT, "description": "1-3; 0 unknown"},
                                     "projects": {"type": "array", "items": _string()}, "keys": _INT,
                                     "state": _string(enum=["serving", "cooling"]),
                                     "cause": _string(description="billing_depleted (a 402), spend_limit; \"\""),
                                     "until": _TIME,
                                     "cooling_projects": {"type": "array", "items": _string()}})},
        }),
        "Usage": _object({"window": _string(enum=["hour", "day"]), "window_s": _INT,
                          **{name: {"type": "array", "items": ref("UsageRow")}
                             for name in ("pools", "keys", "tokens")}}),
        "Token": _object({"token_id": _string(), "name": _string(), "pool": _string(),
                          "prefix": _string(description="the token's first characters, to recognise it"),
                          "created_at": _TIME, "expires_at": _TIME, "last_used": _TIME, "revoked": _BOOL,
                          "requests_per_minute": _INT,
                          "budgets": {"type": "array", "items": _object({
                              "model": _string(description="\"\": every model"),
                              **{name: _INT for name in ("requests_per_minute", "requests_per_day",
                                                         "tokens_per_minute", "tokens_per_day")}})}}),
        "TokenList": _object({"tokens": {"type": "array", "items": ref("Token")}}),
        "TokenIssued": _object({"token": _string(description="the client token, shown this once"),
                                "info": ref("Token")}),
        "ExportDocument": {
            "type": "object",
            "description": "keyring-export/v1: pools, token hashes and keys (secrets sealed, or in clear when asked)",
            "properties": {"format": _string(), "secrets": _string(enum=["sealed", "clear"]),
                           "pools": {"type": "array"}, "tokens": {"type": "array"}, "keys": {"type": "array"}},
        },
        "ImportResult": _object({"pools": _INT, "keys": _INT, "tokens": _INT}),
        "AuditList": _object({"entries": {"type": "array", "items": _object({
            "at": _TIME, "actor": _string(), "action": _string(), "target": _string(), "detail": _string()})}}),
        "Session": _object({"name": _string(), "via": _string(enum=["bearer", "cookie"]),
                            "expires_at": _TIME, "csrf_token": {"type": ["string", "null"]},
                            "role": _ROLE, "can_export": _CAN_EXPORT}),
        "LoginResult": _object({"name": _string(), "csrf_token": _string(), "expires_at": _string(format="date-time"),
                                "role": _ROLE, "can_export": _CAN_EXPORT}),
        "LoggedOut": _object({"logged_out": _BOOL}),
        "Health": _object({"status": _string()}),
    }


_ERROR_TEXT: Final = {
    400: "Bad input: malformed JSON, wrong types, unknown fields, values out of range",
    401: "No or wrong credentials",
    403: "A viewer token (with +export or not) on a route that changes state or exports, an export in clear "
         "without the +export permission, or a cookie session without a matching X-CSRF-Token header",
    404: "No such pool, key, token or route",
    408: "The request body did not arrive within the body timeout (the connection is then closed)",
    409: "Already exists, or not possible in the current state",
    413: "Request body too large, or holding too many JSON elements, for this route",
    415: "Request body is not application/json",
    429: "Too many failed logins from this address or for this name (Retry-After says for how long), "
         "or keyring refused for now",
    501: "Keyring does not implement this call yet",
    502: "Keyring failed unexpectedly",
    503: "Keyring unavailable",
    504: "Keyring did not answer in time",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": _ERROR_TEXT[code], "content": {JSON: {"schema": ref("Error")}}}
        for code in codes
    }


def _ok(schema: str, code: int = 200, description: str = "OK") -> dict[str, Any]:
    return {str(code): {"description": description, "content": {JSON: {"schema": ref(schema)}}}}


def _body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": ref(model)}}}


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string", "minLength": 1}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


_CALL_ERRORS: Final = (401, 409, 429, 502, 503, 504)


def _op(summary: str, responses: dict[str, Any], *, body: str | None = None, params: list[Any] | None = None,
        errors: tuple[int, ...] = (), pending: bool = False, public: bool = False) -> dict[str, Any]:
    codes = {400, *errors} | (set() if public else set(_CALL_ERRORS))
    if body:
        codes |= {408, 413, 415}
    if not public:
        codes.add(403)
    if pending:
        codes.add(501)
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **_errors(*sorted(codes))}}
    if body:
        operation["requestBody"] = _body(body)
    if params:
        operation["parameters"] = params
    if public:
        operation["security"] = []
    return operation


_POOL = _path("name", {"type": "string", "minLength": 1, "maxLength": 200})
_KEY = _path("key_id", {"type": "string", "minLength": 1, "maxLength": 200})
_TOKEN = _path("token_id", {"type": "string", "minLength": 1, "maxLength": 200})
_SHORT = {"type": "string", "maxLength": 200}


def _paths() -> dict[str, Any]:
    key_filters = [
        _query("pool", _SHORT), _query("state", {"type": "string", "enum": [state.value for state in s.KeyStateName]}),
        _query("cooling_model", _SHORT, "keys cooling for this model now"), _query("project", _SHORT),
        _query("tier", {"type": "integer", "minimum": 0, "maximum": 100}), _query("tag", _SHORT),
        _query("q", _SHORT, "matches key id, mask, note, project, tags"),
        _query("page_size", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _query("page_token", {"type": "string", "pattern": "^[0-9]{0,10}$"}),
    ]
    key_action = {
        action: {"post": _op(f"{action.capitalize()} a key", _ok("Key"), params=[_KEY], errors=(404,))}
        for action in ("enable", "disable", "revive")
    }
    return {
        "/healthz": {"get": _op("Liveness", _ok("Health"), public=True)},
        "/readyz": {"get": _op("Readiness: a keyring replica serves", {**_ok("Health"), **_errors(503)}, public=True)},
        "/metrics": {"get": _op("Prometheus metrics (text exposition format)", _METRICS_OK, public=True)},
        "/api/login": {"post": _op("Console login: sets the session and CSRF cookies", _ok("LoginResult"),
                                   body="LoginRequest", errors=(401, 429), public=True)},
        "/api/logout": {"post": _op("End the console session", _ok("LoggedOut"), errors=(403,))},
        "/api/session": {"get": _op("Who is calling", _ok("Session"))},
        "/api/overview": {"get": _op("Per pool: keys by state, tokens, last hour's usage", _ok("Overview"))},
        "/api/pools": {
            "get": _op("List pools", _ok("PoolList")),
            "post": _op("Create a pool", _ok("Pool", 201, "Created"), body="PoolCreate", errors=(404,)),
        },
        "/api/pools/{name}": {
            "get": _op("Get a pool", _ok("Pool"), params=[_POOL], errors=(404,)),
            "patch": _op("Change a pool", _ok("Pool"), body="PoolUpdate", params=[_POOL], errors=(404,)),
            "delete": _op("Delete a pool (refused with 409 while it has keys or tokens, unless force=true)",
                          _ok("PoolDeleted"),
                          params=[_POOL, _query("force", {"type": "string", "enum": ["true", "false"]})],
                          errors=(404,)),
        },
        "/api/pools/{name}/overview": {"get": _op(
            "One pool at a glance: the last hour per five minutes, keys by state, cooldowns by cause, "
            "quota headroom, the busiest tokens, billing accounts", _ok("PoolOverview"), params=[_POOL],
            errors=(404,))},
        "/api/pools/{name}/keys": {"post": _op("Add keys (pasted text or items); reported per item",
                                               _ok("AddKeysResult"), body="KeysAdd", params=[_POOL], errors=(404,))},
        "/api/keys": {"get": _op("List keys with health", _ok("KeyList"), params=key_filters, errors=(404,))},
        "/api/keys/bulk": {"post": _op("One action on many keys", _ok("BulkResult"), body="BulkRequest",
                                       errors=(404,), pending=True)},
        "/api/keys/verify-unhealthy": {"post": _op("Re-check every invalid or suspended key",
                                                   _ok("VerifyUnhealthyResult"), body="VerifyUnhealthyRequest",
                                                   errors=(404,), pending=True)},
        "/api/keys/{key_id}": {
            "get": _op("Get a key", _ok("Key"), params=[_KEY], errors=(404,)),
            "patch": _op("Change a key's attributes", _ok("Key"), body="KeyUpdate", params=[_KEY], errors=(404,)),
            "delete": _op("Delete a key", _ok("KeyDeleted"), params=[_KEY], errors=(404,)),
        },
        **{f"/api/keys/{{key_id}}/{action}": item for action, item in key_action.items()},
        "/api/keys/{key_id}/verify": {"post": _op("Check a key with a cheap upstream call", _ok("VerifyResult"),
                                                  params=[_KEY], errors=(404,), pending=True)},
        "/api/usage": {"get": _op("Requests, errors and tokens per pool, key and client token", _ok("Usage"),
                                  params=[_query("pool", _SHORT),
                                          _query("window", {"type": "string", "enum": ["hour", "day"]})],
                                  errors=(404,), pending=True)},
        "/api/quotas": {"get": _op("Quota limits per project: limit, used in the current window, remaining, next reset",
                                   _ok("QuotaList"), params=[_query("pool", _SHORT), _query("project", _SHORT)],
                                   errors=(404,))},
        "/api/tokens": {
            "get": _op("List client tokens", _ok("TokenList"), params=[_query("pool", _SHORT)], errors=(404,)),
            "post": _op("Create a client token (shown once)", _ok("TokenIssued", 201, "Created"), body="TokenCreate",
                        errors=(404,)),
        },
        "/api/tokens/{token_id}": {"patch": _op("Change a token's name, rate limit or budgets", _ok("Token"),
                                                body="TokenUpdate", params=[_TOKEN], errors=(404,))},
        "/api/tokens/{token_id}/rotate": {"post": _op("Replace a token (the new one is shown once)",
                                                      _ok("TokenIssued"), params=[_TOKEN], errors=(404,))},
        "/api/tokens/{token_id}/revoke": {"post": _op("Revoke a token", _ok("Token"), params=[_TOKEN], errors=(404,))},
        "/api/export": {"get": _op("Export the configuration (operators; secrets in clear need +export)",
                                   _ok("ExportDocument"),
                                   params=[_query("include_secrets", {"type": "string", "enum": ["true", "false"]},
                                                  "secrets in clear (audited; needs the +export permission); "
                                                  "default: sealed")])},
        "/api/import": {"post": _op("Import an exported document (existing records are kept); every record is "
                                    "validated like the other routes, ids are recomputed; client tokens in the "
                                    "document are refused (400) unless keep_client_tokens=true",
                                    _ok("ImportResult"), body="ExportDocument", errors=(404,),
                                    params=[_query("keep_client_tokens", {"type": "string", "enum": ["true", "false"]},
                                                   "import the document's client-token hashes as working tokens: "
                                                   "only for a document you made yourself")])},
        "/api/audit": {"get": _op("Changes made through the admin RPCs, newest first", _ok("AuditList"),
                                  params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
                                  pending=True)},
    }


@cache
def _document() -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "validation") for model in s.REQUEST_MODELS], ref_template=REF, schema_generator=_NoNull
    )
    components = dict(top.get("$defs", {}))
    answers = _answer_schemas()
    clash = set(components) & set(answers)
    if clash:
        raise RuntimeError(f"request and answer schemas share names: {clash}")
    components.update(answers)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keyring admin API",
            "version": "1",
            "description": "Pools, upstream keys (shown by id and mask only), client tokens, usage and audit. "
            "Errors: {\"error\": {\"code\", \"status\", \"message\"}}.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an admin token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "keyring_session",
                            "description": "set by POST /api/login; writes also need the X-CSRF-Token header"},
            },
        },
    }


_METRICS_OK: dict[str, Any] = {
    "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
}


def spec() -> dict[str, Any]:
    """A fresh copy of the document (callers may change theirs)."""
    return copy.deepcopy(_document())
