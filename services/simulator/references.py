"""What a generate call references: `files/...` (fileData.fileUri) and `cachedContent`.

Both must belong to the caller's project, as on Google, which answers 403 for a file
or a cache of another project exactly as for one that does not exist.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any, Final

from .errors import SimError, invalid_argument, permission_denied
from .pipeline import Call
from .resources import Resource, ResourceStore

_FILE_URI: Final = re.compile(r"(?:https?://[^/]+/(?:v1beta|v1)/)?files/([^/?#:]+)")
CACHE_NOT_FOUND: Final = "CachedContent not found (or permission denied)"


def file_denied(file_id: str) -> SimError:
    """Google's answer for a file that is not the caller's project's (or does not exist)."""
    return permission_denied(f"You do not have permission to access the File {file_id} or it may not exist.")


def _file_uris(contents: Any) -> Iterator[str]:
    for content in contents if isinstance(contents, list) else []:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            data = (part.get("fileData") or part.get("file_data")) if isinstance(part, dict) else None
            uri = (data.get("fileUri") or data.get("file_uri")) if isinstance(data, dict) else None
            if isinstance(uri, str):
                yield uri


def file_ids(contents: Any) -> Iterator[str]:
    """Ids of the Files API files that `contents` reference (other URIs, gs:// or YouTube, are not ours)."""
    for uri in _file_uris(contents):
        match = _FILE_URI.fullmatch(uri)
        if match is not None:
            yield match.group(1)


def check_files(store: ResourceStore, project: str, contents: Any) -> None:
    """Raise Google's 403 unless every referenced file is an existing file of `project`."""
    for file_id in file_ids(contents):
        if store.get("files", file_id, project) is None:
            raise file_denied(file_id)


def live_cache(store: ResourceStore, name: str, project: str) -> Resource | None:
    """The unexpired cache `cachedContents/{id}` of `project` (None otherwise)."""
    cache_id = name.removeprefix("cachedContents/")
    cache = store.get("cachedContents", cache_id, project)
    if cache is None or cache.expires < time.time():
        return None
    return cache


def check_references(call: Call, data: dict[str, Any]) -> int:
    """Check a generate request's files and cache against the caller's project; the cached token count."""
    body = call.body
    if b"files/" not in body and b"ached" not in body:  # the hot path: nothing referenced
        return 0
    store = call.state.resources
    check_files(store, call.project, data.get("contents"))
    name = data.get("cachedContent") or data.get("cached_content")
    if not isinstance(name, str) or not name:
        return 0
    cache = live_cache(store, name, call.project)
    if cache is None:
        raise permission_denied(CACHE_NOT_FOUND)
    if any(data.get(field) for field in ("systemInstruction", "system_instruction", "tools", "toolConfig")):
        raise invalid_argument(
            "CachedContent can not be used with GenerateContent request setting system_instruction, tools or"
            " tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request."
        )
    if cache.data["model"] != f"models/{call.model}":
        raise invalid_argument(
            f"Model used by GenerateContent request (models/{call.model}) and CachedContent ({cache.data['model']})"
            " has to be the same."
        )
    tokens: int = cache.data["usageMetadata"]["totalTokenCount"]
    return tokens
