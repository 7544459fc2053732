"""Checking plain data against a JSON Schema: one compiled validator per schema object, errors as
:class:`~heartbeat.errors.InvalidInput` (400) naming where the value went wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema

from heartbeat.errors import InvalidInput

__all__ = ["check", "integral"]


_validators: dict[int, Any] = {}


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """``pattern`` as JSON Schema means it (ECMA-262, section 22.2): ``$`` matches only at the very end.
    Python's ``$`` also matches before a final newline, which would let ``"face_detection\n"`` by."""
    if isinstance(instance, str) and re.search(_python_pattern(pattern), instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _python_pattern(pattern: str) -> str:
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def _validator(schema: dict[str, Any]) -> Any:
    """One compiled validator per schema object (the schemas are module constants)."""
    validator = _validators.get(id(schema))
    if validator is None:
        base = jsonschema.validators.validator_for(schema)
        base.check_schema(schema)
        validator_class = jsonschema.validators.extend(base, {"pattern": _ecma_pattern})
        validator = _validators[id(schema)] = validator_class(schema)
    return validator


def check(value: Any, schema: dict[str, Any], *, where: str = "") -> None:
    """:class:`InvalidInput` (400) naming the first place where ``value`` does not match ``schema``."""
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(value))
    if error is not None:
        where = "/".join([where, *(str(part) for part in error.absolute_path)]).strip("/")
        raise InvalidInput(f"{where}: {error.message}" if where else error.message)


def integral(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` (valid against ``schema``) with each float that ``schema`` types as an integer made
    an int, so that ``96673.0`` is used as ``96673`` everywhere (MySQL refuses ``LIMIT 2.0``).

    Follows ``properties``, ``additionalProperties`` and ``items``, the keywords our schemas nest with.
    """
    if not _mentions_integer(schema):
        return value
    if isinstance(value, float) and value.is_integer() and "integer" in _types(schema):
        return int(value)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {
            key: integral(item, properties.get(key, extra if isinstance(extra, dict) else {}))
            for key, item in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [integral(item, schema["items"]) for item in value]
    return value


def _types(schema: dict[str, Any]) -> list[str]:
    kinds = schema.get("type", [])
    return [kinds] if isinstance(kinds, str) else kinds


_mentions: dict[int, bool] = {}


def _mentions_integer(schema: Any) -> bool:
    """Whether ``schema`` or any schema inside it types something as an integer (cached per schema)."""
    if not isinstance(schema, dict):
        return False
    found = _mentions.get(id(schema))
    if found is None:
        nested = [*schema.get("properties", {}).values(), schema.get("additionalProperties"), schema.get("items")]
        found = _mentions[id(schema)] = "integer" in _types(schema) or any(_mentions_integer(s) for s in nested)
    return found
