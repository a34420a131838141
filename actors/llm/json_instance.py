"""Instances of a JSON schema, built from a seeded generator: valid ones and broken ones.

Covers what structured-output schemas use: local ``$ref``/``$defs``, objects with
``required``, arrays with ``minItems``/``maxItems``, strings (``enum``, ``const``,
``format``, lengths; ``pattern`` is not honoured), integers and numbers with bounds,
booleans, ``anyOf``/``oneOf``/``allOf`` and nullable types. The SDK's
``transform_schema`` moves unsupported constraints into descriptions; they are read back.

>>> build_instance({"type": "integer", "minimum": 3, "maximum": 3}, random.Random(0))
3
"""

from __future__ import annotations

import math
import random
import re
import uuid
from typing import Any


def build_instance(
    schema: dict[str, Any], rng: random.Random, words: list[str] | None = None
) -> Any:
    """An instance valid for ``schema``; strings are made from ``words``."""
    faker = _Faker(schema, rng, words or [])
    return faker.make(schema)


def resolve(schema: dict[str, Any], root: dict[str, Any] | None = None) -> dict[str, Any]:
    """``schema`` with its local ``$ref`` followed (against ``root``, default itself)."""
    return _Faker(root if root is not None else schema, random.Random(0), []).resolve(schema)


def break_instance(instance: Any, schema: dict[str, Any]) -> Any:
    """``instance`` changed so it violates ``schema`` the way a confused model would."""
    root = resolve(schema)
    if not isinstance(instance, dict):
        return {"unexpected": instance}
    broken = dict(instance)
    props = root.get("properties") or {}
    numeric = [k for k, s in props.items() if isinstance(s, dict) and _is_numeric(s)]
    if numeric:
        broken[numeric[0]] = "high"  # a word where a number belongs
    elif root.get("required"):
        broken.pop(root["required"][0], None)
    else:
        broken = {"unexpected": instance}
    return broken


def _is_numeric(schema: dict[str, Any]) -> bool:
    return schema.get("type") in ("number", "integer")


_LIMIT_KEYS = frozenset(
    [
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    ]
)
# The SDK's transform_schema moves unsupported constraints into the description as
# "...\n\n{minimum: 0, maximum: 1}"; read them back from there.
_DESCRIBED_LIMITS = re.compile(r"\{([^{}]*)\}\s*$")
_FORMATS = {
    "date-time": "2025-01-01T12:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00",
    "duration": "PT1H",
    "email": "simulated@example.com",
    "hostname": "example.com",
    "uri": "https://example.com/simulated",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}


class _Faker:
    """Builds instances of a JSON schema from a seeded generator."""

    def __init__(self, root: dict[str, Any], rng: random.Random, words: list[str]) -> None:
        self._root = root  # where "#/..." references point
        self._rng = rng
        self._words = words or ["value"]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow ``$ref`` (local references only) until a concrete schema."""
        for _ in range(32):
            ref = schema.get("$ref")
            if not isinstance(ref, str) or not ref.startswith("#"):
                return schema
            target: Any = self._root
            for part in ref.lstrip("#/").split("/") if ref != "#" else []:
                target = target[part.replace("~1", "/").replace("~0", "~")]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def make(self, schema: dict[str, Any], depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._rng.choice(schema["enum"])
        if schema.get("allOf"):
            return self.make(self._merge(schema), depth)
        variants = schema.get("anyOf") or schema.get("oneOf")
        if variants:
            concrete = [v for v in variants if self.resolve(v).get("type") != "null"]
            # Deep inside recursive schemas, take null when allowed so the output stays finite.
            if concrete and (depth < 6 or len(concrete) == len(variants)):
                return self.make(concrete[0], depth)
            return None
        type_ = schema.get("type")
        if isinstance(type_, list):
            type_ = next((t for t in type_ if t != "null"), "null")
        if type_ is None:
            type_ = "array" if "items" in schema else "object" if "properties" in schema else ""
        limits = self._limits(schema)
        if type_ == "object":
            return self._object(schema, depth)
        if type_ == "array":
            return self._array(schema, limits, depth)
        if type_ in ("integer", "number"):
            return self._number(type_, limits)
        if type_ == "boolean":
            return self._rng.random() < 0.5
        if type_ == "null":
            return None
        return self._string(schema, limits)

    def _merge(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self.resolve(part)
            merged["properties"] = {**merged.get("properties", {}), **part.get("properties", {})}
            merged["required"] = [*merged.get("required", []), *part.get("required", [])]
            merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
        return merged

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out = {}
        for name, sub in props.items():
            if name in required or depth < 4:
                out[name] = self.make(sub, depth + 1)
        for name in required - out.keys():
            out[name] = self._rng.choice(self._words)
        return out

    def _array(self, schema: dict[str, Any], limits: dict[str, float], depth: int) -> list[Any]:
        low = int(limits.get("minItems", 0))
        count = max(low, self._rng.randint(1, 3) if depth < 4 else 0)
        if "maxItems" in limits:
            count = min(count, int(limits["maxItems"]))
        items = self.resolve(schema.get("items") or {})
        if schema.get("uniqueItems") and items.get("enum"):
            return self._rng.sample(items["enum"], min(count, len(items["enum"])))
        return [self.make(items, depth + 1) for _ in range(count)]

    def _number(self, type_: str, limits: dict[str, float]) -> float | int:
        step = 1.0 if type_ == "integer" else 0.01
        low = limits.get("minimum", limits.get("exclusiveMinimum", -math.inf) + step)
        high = limits.get("maximum", limits.get("exclusiveMaximum", math.inf) - step)
        low = low if math.isfinite(low) else min(0.0, high - 100)
        high = high if math.isfinite(high) else low + (100 if type_ == "integer" else 1)
        if type_ == "integer":
            multiple = max(1, int(limits.get("multipleOf", 1)))
            first = math.ceil(low / multiple) * multiple
            steps = max(0, (math.floor(high) - first) // multiple)
            return int(first + multiple * self._rng.randint(0, steps))
        value = round(self._rng.uniform(low, high), 2)
        return min(max(value, low), high)

    def _string(self, schema: dict[str, Any], limits: dict[str, float]) -> str:
        fmt = schema.get("format")
        if fmt == "uuid":
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        if fmt in _FORMATS:
            return _FORMATS[fmt]
        text = "simulated " + " ".join(self._rng.sample(self._words, min(2, len(self._words))))
        low = int(limits.get("minLength", 0))
        while len(text) < low:
            text += " " + text
        return text[: int(limits["maxLength"])] if "maxLength" in limits else text

    def _limits(self, schema: dict[str, Any]) -> dict[str, float]:
        limits = {k: float(schema[k]) for k in _LIMIT_KEYS if _is_number(schema.get(k))}
        match = _DESCRIBED_LIMITS.search(str(schema.get("description") or ""))
        for part in match.group(1).split(", ") if match else []:
            key, _, value = part.partition(": ")
            if key in _LIMIT_KEYS and key not in limits:
                try:
                    limits[key] = float(value)
                except ValueError:
                    continue
        return limits


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
