"""Value types the spec files share (durations, import paths, strict models), apart from
mlplatform.spec so that sections defined next to their code (mlplatform.rollout.plan) can use
them without importing the whole spec."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"^\d+(s|m|h|d|w)$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(value: str) -> int:
    """'90s', '15m', '1h', '7d', '2w' -> seconds."""
    return int(value[:-1]) * _SECONDS[value[-1]]


def _check_duration(value: str | None) -> str | None:
    if value is not None and not _DURATION.match(value):
        raise ValueError(f"expected a duration such as 30s, 15m, 1h, 7d, got {value!r}")
    return value


def _check_import_path(value: str | None) -> str | None:
    if value is not None and not _IMPORT_PATH.match(value):
        raise ValueError(f"expected an import path such as package.module.Name, got {value!r}")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
ImportPath = Annotated[str, AfterValidator(_check_import_path)]


def _not_implemented(why: str) -> BeforeValidator:
    """A section that is refused whatever it holds (even empty): the error carries its path and
    line like any other spec error."""

    def refuse(value: Any) -> Any:
        raise ValueError(f"not implemented yet ({why}); remove the section")

    return BeforeValidator(refuse)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
