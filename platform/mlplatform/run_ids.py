"""Pipeline run ids: generated, or checked when a user names one."""

from __future__ import annotations

import datetime as dt
import re
import secrets

from mlplatform.errors import InputError

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def new_run_id(pipeline: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline}-{stamp}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    """Run ids name folders and travel in a shell command: letters, digits, . _ - only."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise InputError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    return run_id
