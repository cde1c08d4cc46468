"""Reading a pipeline spec from YAML, with errors that point at the line.

pydantic reports *where* in the data a value is wrong (a loc tuple); the YAML
composer knows *which line* each node came from. Joining the two gives errors like
`model.search.num_samples (line 23): ...` that a user can fix without guessing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mlplatform.errors import InputError
from mlplatform.spec import PipelineSpec, SchemaSpec

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SpecIssue(BaseModel):
    path: str
    line: int | None
    message: str
    value: Any = None

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        shown = ""
        if self.value is not None and repr(self.value) not in self.message:
            shown = f" (got {self.value!r})"
        return f"{where}: {self.path or '<root>'}: {self.message}{shown}"


class SpecError(InputError):
    """A spec file with one or more problems; carries every problem, not just the first."""

    def __init__(self, file: str, issues: list[SpecIssue]):
        self.file = file
        self.issues = issues
        lines = "\n".join("  " + i.render(file) for i in issues)
        super().__init__(f"{file}: {len(issues)} problem(s) in the spec\n{lines}")


def _line_index(node: yaml.Node, prefix: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every path in the document to its 1-based line (keys to their key's line)."""
    out = {} if out is None else out
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            out[path] = key.start_mark.line + 1
            _line_index(value, path, out)
            out[path] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, prefix + (i,), out)
    return out


def _line_for(index: dict[tuple, int], loc: tuple) -> int | None:
    # A missing key has no line of its own: point at the closest parent that exists.
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in index:
            return index[loc[:cut]]
    return None


def expand_env(data: Any, env: dict[str, str], path: tuple = ()) -> Any:
    """Expand ${VAR} and ${VAR:-default} in every string, like docker compose."""
    if isinstance(data, dict):
        return {k: expand_env(v, env, path + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, env, path + (i,)) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise KeyError((path, name))

        return _VAR.sub(sub, data)
    return data


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_UNION_TAGS = {"str", "SchemaSpec"}


def _clean_loc(loc: tuple) -> tuple:
    # pydantic adds the union member it tried ('str', 'SchemaSpec') and validator tags
    # ('function-after[...]'); the user wrote neither.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))


def validate_document(
    text: str, file: str, model: type[BaseModel], env: dict[str, str]
) -> BaseModel:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        if line is None and isinstance(exc, yaml.reader.ReaderError):  # a bad byte: only a position
            line = text.count("\n", 0, exc.position) + 1
        raise SpecError(file, [SpecIssue(path="", line=line, message=f"not valid YAML: {exc}")]) from None
    if root is None:
        raise SpecError(file, [SpecIssue(path="", line=1, message="the file is empty")])
    index = _line_index(root)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise SpecError(file, [SpecIssue(path="", line=1, message="expected a mapping at the top")])
    try:
        data = expand_env(data, env)
    except KeyError as exc:
        path, name = exc.args[0]
        raise SpecError(
            file,
            [
                SpecIssue(
                    path=_format_loc(path),
                    line=_line_for(index, path),
                    message=f"environment variable ${{{name}}} is not set (use ${{{name}:-default}})",
                )
            ],
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = []
        seen = set()
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            key = (loc, err["msg"])
            if key in seen:
                continue
            seen.add(key)
            value = err.get("input")
            if err["type"] == "missing" or isinstance(value, dict | list):
                value = None
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not part of the spec)"
            else:
                msg = err["msg"].removeprefix("Value error, ")
            issues.append(
                SpecIssue(path=_format_loc(loc), line=_line_for(index, loc), message=msg, value=value)
            )
        issues.sort(key=lambda i: (i.line or 0, i.path))
        raise SpecError(file, issues) from None


def _is_uri(path: str) -> bool:
    return "://" in path


def _resolve(path: str, base: Path) -> str:
    if _is_uri(path) or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def load_spec(
    file: str | Path, *, env: dict[str, str] | None = None, base_dir: Path | None = None
) -> PipelineSpec:
    """Load, expand and validate a pipeline spec; relative paths resolve against its folder.

    `base_dir` overrides that folder: a job on the cluster reads a copy of the spec
    but must resolve paths as the submitter's machine did.
    """
    file = Path(file)
    if not file.is_file():
        raise InputError(f"spec file not found: {file}")
    env = dict(os.environ if env is None else env)
    spec = validate_document(file.read_text(), str(file), PipelineSpec, env)
    assert isinstance(spec, PipelineSpec)
    base = (base_dir or file.parent).resolve()
    spec.source.path = _resolve(spec.source.path, base)
    if isinstance(spec.schema_, str):
        schema_file = Path(_resolve(spec.schema_, base))
        if not schema_file.is_file():
            raise SpecError(
                str(file),
                [SpecIssue(path="schema", line=None, message="schema file not found",
                           value=str(schema_file))],
            )
        schema = validate_document(schema_file.read_text(), str(schema_file), SchemaSpec, env)
        assert isinstance(schema, SchemaSpec)
        spec.schema_ = schema
    return spec
