"""The base of every config section: a pydantic model that refuses unknown keys with a suggestion.

A section (``data``, ``features``, ``train``, a model's parameters) is a pydantic model with
``extra="forbid"`` and assignment checked like loading. An unknown key is reported as pydantic's
error ``unknown_key`` at the key's path, with the closest known key (``did you mean
lr_dense?``), or the known keys when none is close. Values are taken as pydantic's lax mode
takes them: an integer for a float, a numeric string for a number (YAML 1.1 reads ``1e-3`` as a
string), a list for a tuple; but not ``true``/``false`` for a number (``epochs: true`` is a
mistake, not 1).
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Self

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

_PYDANTIC_ERRORS = frozenset(typing.get_args(pydantic_core.core_schema.ErrorType))


class Section(BaseModel):
    """A config section: unknown keys refused with a suggestion, assignments checked."""

    # each field's docstring is its description in the exported JSON schema
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )

    @model_validator(mode="wrap")
    @classmethod
    def _suggest_for_unknown_keys(cls, values: Any, handler: Any) -> Any:
        try:
            return handler(values)
        except ValidationError as err:
            lines = [_with_suggestion(cls, error) for error in err.errors()]
            raise ValidationError.from_exception_data(err.title, lines) from None

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None and _bool_for_a_number(
            cls.model_fields[info.field_name].annotation, value
        ):
            raise PydanticCustomError("bool_for_number", "expected a number, not a boolean")
        return value

    def updated(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked as a loaded section is."""
        return type(self).model_validate({**self.model_dump(), **changes})


def _bool_for_a_number(annotation: Any, value: Any) -> bool:
    """Whether ``value`` holds a boolean where ``annotation`` takes a number and no boolean:
    the value itself, or an element of a list or tuple (``hidden: [true, 64]``)."""
    kinds = _leaf_types(annotation)
    if isinstance(value, bool):
        return bool not in kinds and bool(kinds & {int, float})
    if isinstance(value, list | tuple):
        return any(_bool_for_a_number(annotation, v) for v in value)
    return False


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types an annotation takes, through ``Annotated``, unions and the element
    types of sequences (``tuple[int, ...] | None`` -> int, NoneType)."""
    args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
    if not args:
        return {annotation}
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaf_types(args[0])
    return set().union(*(_leaf_types(a) for a in args))


def suggestion(name: str, known: typing.Iterable[str]) -> str:
    """``did you mean X?`` for the known name closest to ``name`` (difflib's ratio at least
    0.75: a dropped, doubled or swapped letter, not a shared syllable), else the known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"


def _with_suggestion(cls: type[Section], error: Any) -> Any:
    """``error`` as a line of a new ValidationError: an unknown key of ``cls`` itself becomes
    ``unknown_key`` with a suggestion; pydantic's own errors and the ones nested sections
    already made keep their type and message."""
    line = {"loc": error["loc"], "input": error["input"]}
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        hint = suggestion(str(error["loc"][0]), cls.model_fields)
        return line | {"type": PydanticCustomError("unknown_key", "unknown key; {hint}",
                                                   {"hint": hint})}  # fmt: skip
    if error["type"] in _PYDANTIC_ERRORS:
        return line | {"type": error["type"]} | ({"ctx": error["ctx"]} if "ctx" in error else {})
    return line | {"type": PydanticCustomError(error["type"], error["msg"])}


class ConfigError(ValueError):
    """A config that failed its check: one line per problem, ``where: key.path: message``.
    ``errors`` holds pydantic's errors as they came."""

    def __init__(self, where: str, err: ValidationError):
        self.errors = err.errors()
        super().__init__("\n".join(f"{where}: {_line(e)}" for e in self.errors))


def _line(error: Any) -> str:
    key = ".".join(map(str, error["loc"]))
    text = f"{key}: {error['msg']}" if key else error["msg"]
    shown = error["type"] in _PYDANTIC_ERRORS and error["type"] != "missing"
    return text + (f" (got {error['input']!r})" if shown else "")
