"""The fixed model catalogue the simulator serves (names, limits, methods)."""

from __future__ import annotations

from typing import Any, Final

_GENERATE: Final = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
_EMBED: Final = ["embedContent", "countTokens"]

#: The Google method a `{model}:{action}` call needs the model to support.
ACTION_METHOD: Final[dict[str, str]] = {
    "generateContent": "generateContent",
    "streamGenerateContent": "generateContent",
    "countTokens": "countTokens",
    "embedContent": "embedContent",
    "batchEmbedContents": "embedContent",
}


def _model(name: str, display: str, description: str, inp: int, out: int, methods: list[str]) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": display,
        "description": description,
        "inputTokenLimit": inp,
        "outputTokenLimit": out,
        "supportedGenerationMethods": methods,
    }


MODELS: Final[dict[str, dict[str, Any]]] = {
    m["name"][7:]: m
    for m in (
        _model("gemini-2.5-flash", "Gemini 2.5 Flash", "Stable version of Gemini 2.5 Flash.", 1_048_576, 65_536, _GENERATE),
        _model("gemini-2.5-pro", "Gemini 2.5 Pro", "Stable release of Gemini 2.5 Pro.", 1_048_576, 65_536, _GENERATE),
        _model("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "Stable version of Gemini 2.5 Flash-Lite.", 1_048_576, 65_536, _GENERATE),
        _model("gemini-2.0-flash", "Gemini 2.0 Flash", "Gemini 2.0 Flash", 1_048_576, 8_192, _GENERATE),
        _model("text-embedding-004", "Text Embedding 004", "Obtain a distributed representation of a text.", 2_048, 1, _EMBED),
        _model("gemini-embedding-001", "Gemini Embedding 001", "Obtain a distributed representation of a text.", 2_048, 1, _EMBED),
    )
}
MODEL_NAMES: Final[list[str]] = list(MODELS)


def supports(model: str, method: str) -> bool:
    """True when `model` is known and lists `method`."""
    info = MODELS.get(model)
    return info is not None and method in info["supportedGenerationMethods"]
