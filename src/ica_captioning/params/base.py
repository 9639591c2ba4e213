"""The base of every parameter schema: strict keys, typed values, errors with full key names.

Every default lives in ``conf/base/parameters_<stage>.yml`` and nowhere else: a schema declares
names and types, never values, so a key missing from the configuration is an error too.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

S = TypeVar("S", bound="Params")


class ParameterError(ValueError):
    """A parameter section does not fit its schema (unknown key, wrong type, missing key)."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, others replace).

    Args:
        base: the configuration merged into.
        override: single keys that replace those of ``base`` (nested mappings merge).

    Returns:
        A new dict; neither input is modified.
    """
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing (every parameter is set in conf/base/parameters_<stage>.yml)"
    return f"{error['msg']} (got {error.get('input')!r})"


def format_errors(err: ValidationError, prefix: str) -> str:
    """One line per problem, each naming the full key (``train.encoder.backbon: unknown key``)."""
    lines = []
    for e in err.errors():
        # Pydantic adds the tag of a union member ("function-after[...]") to the location.
        loc = [str(p) for p in e["loc"] if not str(p).startswith(("function-", "constrained-"))]
        lines.append(f"{'.'.join([prefix, *loc]) if prefix else '.'.join(loc)}: {_describe(e)}")
    return "\n".join(lines)


class Params(BaseModel):
    """A parameter section: unknown keys and wrong types are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @classmethod
    def parse(cls: type[S], raw: Mapping[str, Any] | Params | None, key: str) -> S:
        """Validate one parameter section.

        Args:
            raw: the section as Kedro passes it (``params:<key>``), or an already parsed one.
            key: its full key (``train``, ``evaluation.figures``) for the error messages.

        Returns:
            The typed, validated parameters.

        Raises:
            ParameterError: every problem at once, one line each, with the full key name.
        """
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, Params):
            raw = raw.model_dump()
        if raw is None or not isinstance(raw, Mapping):
            raise ParameterError(f"{key}: expected a mapping of parameters, got {raw!r}")
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as err:
            raise ParameterError(
                f"invalid parameters in {key!r}:\n{format_errors(err, key)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what model bundles and checkpoints store)."""
        return self.model_dump(mode="python")
