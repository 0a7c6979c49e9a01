"""User input: its error type (the CLI exits 2 on it), the allowed choices, and validation of settings,
`--set` pairs and schemas, with messages people can act on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

SEARCHERS = ("tpe", "random", "tree")  # --searcher
PRIOR_RULES = ("adaptive", "fixed")  # --prior-rule: how tpe/random draw from the priors
SCHEDULERS = ("asha", "none")  # --scheduler


class TunerInputError(ValueError):
    """Bad user input (settings, space file, CLI flag). The CLI exits with code 2 on it."""


def close_names(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean ...?' for near-misses, else ''."""
    near = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""


def describe_validation_error(err: ValidationError, schema: type[BaseModel], where: str) -> str:
    """One line per problem: the setting, what is wrong, and what is allowed."""
    known = sorted(schema.model_fields)
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(settings)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown setting {loc!r}.{close_names(loc, known)} Known settings: {', '.join(known)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e['input']!r})" if e["loc"] and "input" in e else ""
            lines.append(f"{where}: setting {loc!r}: {msg}{got}")
    return "\n".join(lines)


def validate_settings(schema: type[BaseModel], values: Mapping[str, Any], where: str = "settings") -> BaseModel:
    """`schema(**values)`, raising TunerInputError with a readable message."""
    try:
        return schema.model_validate(dict(values))
    except ValidationError as err:
        raise TunerInputError(describe_validation_error(err, schema, where)) from None


def parse_set_args(pairs: Iterable[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}`; values stay strings for the schema to coerce."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TunerInputError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def describe_schema(schema: type[BaseModel]) -> str:
    """A `--help` listing: every setting with its type, default and description."""
    rows = []
    for name, f in schema.model_fields.items():
        if get_origin(f.annotation) is Literal:
            ann = " | ".join(repr(choice) for choice in get_args(f.annotation))
        else:
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        doc = f" — {f.description}" if f.description else ""
        rows.append(f"  {name} ({ann}) = {f.default!r}{doc}")
    return "\n".join(rows)
