"""Exit codes scripts can rely on, and the one exception every command failure becomes.

A failure is printed as one line on stderr (``keyringctl: <message>``), never
a traceback; the message never holds the admin token or an upstream key.
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
FAILED: Final = 1  # done only in part (a key refused, a check failed), or admin erred
USAGE: Final = 2  # bad arguments, a bad local file or settings, or admin refused the request as invalid (400)
AUTH: Final = 3  # no admin token, a wrong one, or a role that may not do this (401, 403, throttled 429)
NOT_FOUND: Final = 4  # no such pool, key or token (404)
CONFLICT: Final = 5  # the change conflicts with the current state (409: exists already, pool still has keys)
UNAVAILABLE: Final = 6  # admin or keyring cannot be reached or answered 5xx: worth retrying later

EXIT_CODES_HELP: Final = """exit codes:
  0  done
  1  done only in part (a key refused, a check failed) or admin failed
  2  usage: bad arguments, a bad key file or config, or a request admin refused as invalid
  3  authentication: no admin token, a wrong one, or a role that may not do this
  4  not found: no such pool, key or token
  5  conflict: it exists already, or the state forbids it (a pool that still has keys)
  6  unavailable: admin or keyring cannot be reached (retry later)"""

_BY_HTTP_STATUS: Final = {400: USAGE, 401: AUTH, 403: AUTH, 404: NOT_FOUND, 409: CONFLICT, 413: USAGE, 415: USAGE,
                          429: AUTH}


class CliError(Exception):
    """A failure to report: one line and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def exit_code_for(http_status: int) -> int:
    """The exit code of an admin error answer."""
    if http_status in _BY_HTTP_STATUS:
        return _BY_HTTP_STATUS[http_status]
    return UNAVAILABLE if http_status in (502, 503, 504) else FAILED
