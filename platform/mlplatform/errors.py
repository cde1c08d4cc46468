"""Errors a user can act on.

Every failure that comes from the user's input or environment is a PlatformError:
the CLI prints its message (never a traceback) and exits with its code. Exit code 2
means bad input (a spec, a flag, a file), 1 means the operation itself failed.
"""

from __future__ import annotations


class PlatformError(Exception):
    """A failure with a message meant for the user."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(PlatformError):
    """Bad input: a spec, a flag, a file. Exit code 2, like a usage error."""

    exit_code = 2


class StoreUnavailable(PlatformError):
    """A store (Redis, PostgreSQL, S3) is down or not answering right now: the request or step
    may succeed when retried once it is back (a 503 with Retry-After in serving, not a 500)."""


class ClusterUnreachable(PlatformError):
    """The Ray cluster (dashboard / Jobs API) cannot be reached."""
