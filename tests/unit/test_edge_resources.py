"""The edge's pieces for project-bound resources, alone: path patterns, names in bodies, sealed upload
sessions, what an answer binds."""

from __future__ import annotations

import time

import orjson
import pytest
from aiohttp import web

from services.edge import wire
from services.edge.resources import bindings, generic, kinds
from services.edge.resources.sessions import UploadSession, UploadSessions
from services.keyring.domain.models import Pool

HASH = "ab" * 32
GEN = kinds.GENERATE_REFERENCES


@pytest.mark.parametrize(
    ("raw", "kind", "rid", "action", "name", "upstream"),
    [
        ("/v1beta/files/abc-1", "files", "abc-1", "", "files/abc-1", "/v1beta/files/abc-1"),
        ("/v1/files/abc:download?alt=media", "files", "abc", "download", "files/abc", "/v1/files/abc:download"),
        ("/v1beta/cachedContents/c1", "cachedContents", "c1", "", "cachedContents/c1", "/v1beta/cachedContents/c1"),
        ("/v1/batches/b-2:cancel", "batches", "b-2", "cancel", "batches/b-2", "/v1/batches/b-2:cancel"),
        ("/v1beta/interactions/v1_AbC-9", "interactions", "v1_AbC-9", "", "interactions/v1_AbC-9", None),
        ("/v1beta/interactions/v1_x/cancel", "interactions", "v1_x", "cancel", "interactions/v1_x", None),
        ("/v1beta/models/veo-3.1/operations/op1", "operations", "op1", "", "models/veo-3.1/operations/op1", None),
        ("/v1beta/files", "files", "", "", "files/", "/v1beta/files"),
        ("/upload/v1/files", "uploads", "", "", "uploads/", "/upload/v1/files"),
    ],
)
def test_resource_paths(raw: str, kind: str, rid: str, action: str, name: str, upstream: str | None) -> None:
    path = wire.resource_path(raw)
    assert (path.kind, path.id, path.action, path.name) == (kind, rid, action, name)
    expected = upstream or raw.partition("?")[0]
    assert str(wire.resource_url("http://up", path, [])) == "http://up" + expected


@pytest.mark.parametrize(
    "raw",
    [
        "/v1beta/files/ABC",  # upper case
        "/v1beta/files/-abc",  # a dash first
        "/v1beta/files/abc-",  # a dash last
        "/v1beta/files/" + "a" * 41,  # longer than Google's 40
        "/v1beta/files/a%2Fb",
        "/v1beta/files/a/b",
        "/v1beta/files/abc:delete",
        "/v1beta/cachedContents/" + "c" * 65,
        "/v1beta/batches/../models",
        "/v1beta/interactions/_leading",
        "/v1beta/interactions/" + "i" * 129,
        "/v1beta/interactions/a/b",
        "/v1beta/models/veo/operations/op%2E1",
        "/v2/files/abc",
        "/v1beta/files/",
    ],
)
def test_off_pattern_resource_paths_are_refused(raw: str) -> None:
    with pytest.raises(wire.MalformedPath):
        wire.resource_path(raw)


def test_names_in_a_body_are_read_from_fields_only() -> None:
    body = orjson.dumps(
        {
            "contents": [
                {
                    "parts": [
                        {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
                        {"file_data": {"file_uri": "files/def"}},
                        {"text": '"fileUri": "files/notme"'},  # text: its quotes are escaped in the JSON
                        {"fileData": {"fileUri": "https://example.com/files/report"}},  # not a Google file
                        {"fileData": {"fileUri": "gs://bucket/files/x"}},
                    ]
                }
            ],
            "cachedContent": "cachedContents/c1",
            "batch": {"inputConfig": {"fileName": "files/abc"}},
        }
    )
    assert wire.may_name_resources(body, GEN)
    assert wire.named_resources(body, orjson.loads(body), GEN) == ("files/abc", "files/def", "cachedContents/c1")
    plain = b'{"contents": [{"parts": [{"text": "hello \\u00e9t\\u00e9\\n"}]}]}'  # non-ASCII, control escapes
    assert not wire.may_name_resources(plain, GEN) and wire.named_resources(plain, None, GEN) == ()
    bad = b'{"cachedContent": "cachedContents/BAD NAME"}'
    assert wire.named_resources(bad, orjson.loads(bad), GEN) == ()


@pytest.mark.parametrize(
    ("body", "names"),
    [
        # Google decodes the JSON: escapes spell the same names as the plain bytes would (issue 18, finding 7).
        (rb'{"contents": [{"parts": [{"fileData": {"file\u0055ri": "files/abc"}}]}]}', ("files/abc",)),
        (rb'{"contents": [{"parts": [{"fileData": {"fileUri": "files\/abc"}}]}]}', ("files/abc",)),
        (rb'{"contents": [{"parts": [{"fileData": {"fileUri": "\u0066iles/abc"}}]}]}', ("files/abc",)),
        (rb'{"cachedContent": "cachedContents\/c1"}', ("cachedContents/c1",)),
        (rb'{"cached\u0043ontent": "cachedContents/c1"}', ("cachedContents/c1",)),
        # a field given twice: both values (a parser keeps one; which one Google keeps is not ours to guess)
        (
            b'{"cachedContent": "cachedContents/a", "cachedContent": "cachedContents/b"}',
            ("cachedContents/b", "cachedContents/a"),
        ),
        # text mentioning a name, escaped or not, names nothing
        (rb'{"contents": [{"parts": [{"text": "\"fileUri\": \"files\/x\""}]}]}', ()),
    ],
)
def test_names_are_read_from_the_decoded_json(body: bytes, names: tuple[str, ...]) -> None:
    assert wire.may_name_resources(body, GEN)
    assert wire.named_resources(body, orjson.loads(body), GEN) == names


def test_a_body_too_large_to_parse_that_may_name_resources_is_unreadable() -> None:
    for body in (b'{"a": "files/x"}', rb'{"file\u0055ri": "x"}', rb'{"fileUri": "files\/x"}'):
        with pytest.raises(wire.UnreadableNames):
            wire.named_resources(body, None, GEN)  # None: over the parse budget, not parsed
    assert wire.named_resources(b'{"contents": [{"parts": [{"text": "' + b"x" * 100 + b'"}]}]}', None, GEN) == ()


def test_an_agent_needs_an_allow_list_entry_of_its_own() -> None:
    for allowed in ((), ("gemini-3.5-flash",), ("deep-research",)):  # every model, a model, a model named like it
        pool = Pool("p", allowed_models=allowed)
        assert not pool.allows("agents/deep-research") and pool.allows("")
    assert Pool("p", allowed_models=("agents/deep-research",)).allows("agents/deep-research")
    assert Pool("p").allows("gemini-3.5-flash") and wire.valid_agent("agents/deep-research") == "deep-research"


def test_upload_sessions_open_only_on_replicas_sharing_the_key() -> None:
    sessions, same, other = UploadSessions("secret"), UploadSessions("secret"), UploadSessions("another")
    session = UploadSession(HASH, "AUpstream-id_1.x~", 1234, "v1", int(time.time()) + 60)
    sealed = sessions.seal(session)
    assert "AUpstream" not in sealed and HASH not in sealed  # nothing readable
    assert same.open(sealed) == session and session.name.startswith("uploads/") and len(session.name) == 40
    assert other.open(sealed) is None
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert sessions.open(tampered) is None
    assert sessions.open("nosuchsession") is None and sessions.open("") is None and sessions.open("x" * 5000) is None
    assert sessions.open(sealed, now=time.time() + 120) is None  # expired


def test_bindings_from_answers() -> None:
    response = web.Response()
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    created = bindings.created_file(orjson.dumps({"file": {"name": "files/f1", "expirationTime": soon}}), response)
    assert [b.name for b in created.bind] == ["files/f1"] and 590 < created.bind[0].ttl_s <= 600
    caches = generic.created(kinds.top_level("cachedContents"), frozenset())
    assert caches(orjson.dumps({"name": "cachedContents/c"}), response).bind[0].ttl_s == kinds.CACHE_TTL_S
    cache = caches(orjson.dumps({"name": "cachedContents/c", "expireTime": soon}), response).bind[0]
    assert cache.name == "cachedContents/c" and 590 < cache.ttl_s <= 600
    registered = generic.created(kinds.top_level("files"), frozenset({"register"}))
    answer = {"files": [{"name": "files/r1", "expirationTime": soon}, {"name": "files/BAD"}]}
    assert [b.name for b in registered(orjson.dumps(answer), response).bind] == ["files/r1"]
    stored = generic.created(kinds.top_level("agents"), frozenset())(orjson.dumps({"id": "a1"}), response)
    assert stored.bind[0].name == "agents/a1" and stored.bind[0].ttl_s == kinds.KEPT_TTL_S
    job = bindings.created_job(orjson.dumps({"name": "models/veo-3.1/operations/op1"}), response)
    assert [b.name for b in job.bind] == ["models/veo-3.1/operations/op1"]
    assert not bindings.created_job(orjson.dumps({"name": "files/x"}), response)
    head = (
        b'event: interaction.created\ndata: {"event_type": "interaction.created", "interaction": {"id": "v1_Ab"}}\n\n'
    )
    assert [b.name for b in bindings.created_interaction(head, response).bind] == ["interactions/v1_Ab"]
    assert [b.name for b in bindings.created_interaction(b'{"id": "v1_Cd"}', response).bind] == ["interactions/v1_Cd"]
    assert not bindings.created_interaction(b'{"id": "bad id"}', response)
    video = {
        "done": True,
        "response": {"video": {"uri": "https://generativelanguage.googleapis.com/v1beta/files/v1:download?alt=media"}},
    }
    assert [b.name for b in bindings.job_results(orjson.dumps(video), response).bind] == ["files/v1"]
    assert bindings.deleted("files/x")(b"{}", response).unbind == ("files/x",)
    assert bindings.ttl_until("not a time", 5.0) == 5.0


# ---------------------------------------------------------------- the table of kinds (issue 21)


@pytest.mark.parametrize(
    ("raw", "route", "name", "owner", "verb"),
    [
        ("/v1/agents", "agents", "agents", "", ""),
        ("/v1alpha/agents/a-1", "agents", "agents/a-1", "agents/a-1", ""),
        ("/v1beta/webhooks/w1:rotateSigningSecret", "webhooks", "webhooks/w1", "webhooks/w1", "rotateSigningSecret"),
        ("/v1/environments/e1/files/dir/a.txt?alt=media", "environments.files", "environments/e1/files/dir/a.txt",
         "environments/e1", ""),
        ("/v1/interactions/v1_AbC/auth_tokens/t1", "interactions.auth_tokens", "interactions/v1_AbC/auth_tokens/t1",
         "interactions/v1_AbC", ""),
        ("/v1/fileSearchStores/s1/upload/operations/o1", "fileSearchStores.upload.operations",
         "fileSearchStores/s1/upload/operations/o1", "fileSearchStores/s1", ""),
        ("/v1/files:register", "files", "files", "", "register"),
        ("/v1/tunedModels/t-1.2:streamGenerateContent", "tunedModels", "tunedModels/t-1.2", "tunedModels/t-1.2",
         "streamGenerateContent"),
        ("/v1/triggers/t1/executions", "triggers.executions", "triggers/t1/executions", "triggers/t1", ""),
        ("/v1beta/interactions/v1_Ab-9/cancel", "interactions", "interactions/v1_Ab-9", "interactions/v1_Ab-9",
         "cancel"),
        ("/v1/files/abc:download", "files", "files/abc", "files/abc", "download"),
        ("/v1/cachedContents/c1", "caches", "cachedContents/c1", "cachedContents/c1", ""),
        ("/v1beta/models/veo-3.1/operations/op1", "operations", "models/veo-3.1/operations/op1",
         "models/veo-3.1/operations/op1", ""),  # bound by its own name: models are nobody's
    ],
)  # fmt: skip
def test_kind_paths(raw: str, route: str, name: str, owner: str, verb: str) -> None:
    target = kinds.parse(raw)
    assert (target.kind.route, target.name, target.owner, target.verb) == (route, name, owner, verb)
    assert target.tail == raw.partition("?")[0].split("/", 2)[2]  # the upstream path: the parsed parts only


@pytest.mark.parametrize(
    "raw",
    [
        "/v2/agents",
        "/v1/agents/A1",  # upper case
        "/v1/agents/a%2Fb",
        "/v1/agents/a/b",
        "/v1/agents/" + "a" * 64,
        "/v1/environments/e1/files/../secret",
        "/v1/environments/e1/files/./x",
        "/v1/environments/e1/files/a//b",
        "/v1/environments/e%2E/files/x",
        "/v1/interactions/_x/auth_tokens",
        "/v1/fileSearchStores/s1/documents/d1/extra",
        "/v1/agentsx",
        "/v1/agents:",
        "/v1/interactions/v1_x:cancel",  # an interaction's verb follows a slash
        "/v1/interactions/v1_x/delete",
    ],
)
def test_kind_paths_off_the_table_are_malformed(raw: str) -> None:
    with pytest.raises(wire.MalformedPath):
        kinds.parse(raw)


def test_names_from_answers_and_routes_from_the_table() -> None:
    agents, tuned = kinds.top_level("agents"), kinds.top_level("tunedModels")
    assert kinds.named(agents, "a1") == "agents/a1" == kinds.named(agents, "agents/a1")
    assert kinds.named(tuned, "tunedModels/t1/operations/o1") == "tunedModels/t1"
    assert kinds.named(agents, "A!") is None and kinds.named(agents, None) is None
    routes = set(kinds.routes())
    for version in wire.VERSIONS:
        assert ("POST", f"/{version}/interactions/{{parent}}/auth_tokens") in routes
        assert ("POST", f"/{version}/files:{{verb}}") in routes
    assert ("GET", "/v1/decisions") not in routes  # a row says what it answers, nothing else
    assert all(kind.ttl_s <= 400 * 86400 for kind in kinds.KINDS)  # keyring's longest binding


def test_a_kinds_upload_session_seals_where_its_bytes_go() -> None:
    sessions = UploadSessions("k")
    target = "upload/v1alpha/fileSearchStores/s1:uploadToFileSearchStore"
    session = UploadSession(HASH, "up-1", 5, "v1alpha", int(time.time()) + 60, target)
    opened = sessions.open(sessions.seal(session))
    assert opened == session and opened.name == UploadSession(HASH, "up-1", 5, "v1", 0).name
    plain = UploadSession(HASH, "up-2", 5, "v1beta", int(time.time()) + 60)  # a file's: no target, as before
    assert sessions.open(sessions.seal(plain)) == plain
    assert kinds.parse_upload("/upload/v1/environments/e1/files/a/b.txt").owner == "environments/e1"
    for raw in ("/upload/v1/fileSearchStores/s1", "/upload/v1/agents/a1", "/v1/environments/e1/files/x"):
        with pytest.raises(wire.MalformedPath):
            kinds.parse_upload(raw)
