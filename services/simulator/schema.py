"""A small, deterministic instance of a schema: structured output (`responseSchema`,
`responseJsonSchema`) and function-call arguments (`parameters`, `parametersJsonSchema`).

Both the OpenAPI subset Gemini uses (`"type": "OBJECT"`) and JSON Schema
(`"type": "object"`) are read. Required properties are always filled, optional
ones too (so a client reading them finds them); the first enum value is chosen,
numbers take their minimum or 1, strings are derived from `text`.
"""

from __future__ import annotations

from typing import Any, Final

_MAX_DEPTH: Final = 8


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):  # JSON Schema ["string", "null"]
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "string")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def instance(schema: Any, text: str, depth: int = 0) -> Any:
    """A value valid for `schema` (as far as this subset goes)."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return text
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return instance(options[0], text, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = _type(schema)
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: instance(sub, text, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = schema.get("minItems", 1)
        return [instance(schema.get("items"), text, depth + 1) for _ in range(max(1, int(count)))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", 1)
        value = low if isinstance(low, int | float) else 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return text


def function_parameters(declaration: dict[str, Any]) -> Any:
    """The parameter schema of a Gemini function declaration, whichever field carries it."""
    return declaration.get("parametersJsonSchema") or declaration.get("parameters") or {}
