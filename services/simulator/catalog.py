"""Models: a current catalogue for listing, and an open rule for serving.

Any well-formed model name of a known family is served (`gemini-3.5-flash-lite`,
`gemini-3.1-pro-preview`, a name released tomorrow...): what it supports follows
from its family. A name is unknown (Google's 404) when it has no known family
(`xyz`), contains `no-such` (`gemini-no-such-model`, for tests), or was declared
missing through the control API (`SimulatorState.missing_models`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Final

from .errors import invalid_argument

_GENERATE: Final = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
_EMBED: Final = ["embedContent", "countTokens", "asyncBatchEmbedContent"]
_VIDEO: Final = ["predictLongRunning"]
_IMAGE: Final = ["predict"]

#: The Google method a `{model}:{action}` call needs the model to support.
ACTION_METHOD: Final[dict[str, str]] = {
    "generateContent": "generateContent",
    "streamGenerateContent": "generateContent",
    "countTokens": "countTokens",
    "embedContent": "embedContent",
    "batchEmbedContents": "embedContent",
    "batchGenerateContent": "batchGenerateContent",
    "asyncBatchEmbedContent": "asyncBatchEmbedContent",
    "predictLongRunning": "predictLongRunning",
}

#: Names Google serves with another model: `quotas.SERVED_AS` (quotas are the served model's).
_WELL_FORMED: Final = re.compile(r"(gemini|gemma|learnlm|text-embedding|embedding|veo|imagen|lyria)-[a-z0-9.\-]{1,120}")
#: Embedding sizes: the classic text embedders give 768 values, the Gemini embedders 3072.
_SMALL_EMBEDDERS: Final = re.compile(r"(text-embedding|embedding)-\d+")


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


def _thinking(model: dict[str, Any]) -> dict[str, Any]:
    return {**model, "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": True}


CATALOGUE: Final[list[dict[str, Any]]] = [
    _thinking(
        _model(
            "gemini-3.1-pro-preview", "Gemini 3.1 Pro Preview", "Gemini 3.1 Pro Preview.", 1_048_576, 65_536, _GENERATE
        )
    ),
    _thinking(_model("gemini-3.5-flash", "Gemini 3.5 Flash", "Gemini 3.5 Flash.", 1_048_576, 65_536, _GENERATE)),
    _thinking(
        _model("gemini-3.5-flash-lite", "Gemini 3.5 Flash-Lite", "Gemini 3.5 Flash-Lite.", 1_048_576, 65_536, _GENERATE)
    ),
    _thinking(
        _model("gemini-3-pro-preview", "Gemini 3 Pro Preview", "Gemini 3 Pro Preview.", 1_048_576, 65_536, _GENERATE)
    ),
    _thinking(
        _model(
            "gemini-3-flash-preview", "Gemini 3 Flash Preview", "Gemini 3 Flash Preview.", 1_048_576, 65_536, _GENERATE
        )
    ),
    _thinking(
        _model("gemini-2.5-pro", "Gemini 2.5 Pro", "Stable release of Gemini 2.5 Pro.", 1_048_576, 65_536, _GENERATE)
    ),
    _thinking(
        _model(
            "gemini-2.5-flash", "Gemini 2.5 Flash", "Stable version of Gemini 2.5 Flash.", 1_048_576, 65_536, _GENERATE
        )
    ),
    _thinking(
        _model(
            "gemini-2.5-flash-lite",
            "Gemini 2.5 Flash-Lite",
            "Stable version of Gemini 2.5 Flash-Lite.",
            1_048_576,
            65_536,
            _GENERATE,
        )
    ),
    _model("gemini-2.0-flash", "Gemini 2.0 Flash", "Gemini 2.0 Flash", 1_048_576, 8_192, _GENERATE),
    _thinking(
        _model(
            "gemini-flash-latest",
            "Gemini Flash Latest",
            "Latest release of Gemini Flash.",
            1_048_576,
            65_536,
            _GENERATE,
        )
    ),
    _thinking(
        _model("gemini-pro-latest", "Gemini Pro Latest", "Latest release of Gemini Pro.", 1_048_576, 65_536, _GENERATE)
    ),
    _model("gemma-4-31b-it", "Gemma 4 31B", "Gemma 4 31B instruction-tuned.", 131_072, 8_192, _GENERATE),
    _model(
        "gemini-embedding-001",
        "Gemini Embedding 001",
        "Obtain a distributed representation of a text.",
        2_048,
        1,
        _EMBED,
    ),
    _model(
        "gemini-embedding-2", "Gemini Embedding 2", "Obtain a distributed representation of a text.", 8_192, 1, _EMBED
    ),
    _model(
        "text-embedding-004", "Text Embedding 004", "Obtain a distributed representation of a text.", 2_048, 1, _EMBED
    ),
    _model("veo-3.1-generate-preview", "Veo 3.1", "Veo 3.1 video generation.", 1_024, 1, _VIDEO),
    _model("imagen-4.0-generate-001", "Imagen 4", "Imagen 4 image generation.", 480, 8_192, _IMAGE),
]
_LISTED: Final[dict[str, dict[str, Any]]] = {m["name"][7:]: m for m in CATALOGUE}


def _family_methods(model: str) -> list[str]:
    if "embedding" in model:
        return _EMBED
    if model.startswith("veo-"):
        return _VIDEO
    if model.startswith("imagen-"):
        return _IMAGE
    return _GENERATE


def model_info(model: str, missing: Collection[str] = ()) -> dict[str, Any] | None:
    """The model object Google would show for `model`, or None when the name is unknown."""
    if model in missing or "no-such" in model:
        return None
    listed = _LISTED.get(model)
    if listed is not None:
        return listed
    if not _WELL_FORMED.fullmatch(model):
        return None
    display = model.replace("-", " ").title()
    return _model(model, display, f"{display}.", 1_048_576, 65_536, _family_methods(model))


def supports(model: str, method: str, missing: Collection[str] = ()) -> bool:
    """True when `model` is served and supports `method`."""
    info = model_info(model, missing)
    return info is not None and method in info["supportedGenerationMethods"]


def embedding_size(model: str) -> int:
    """How many values an embedding of `model` has by default: 768 or 3072."""
    return 768 if _SMALL_EMBEDDERS.fullmatch(model) else 3072


def dimensions(model: str, requested: Any) -> int:
    """Values per embedding: the model's size (768 or 3072), or `outputDimensionality` when given."""
    size = embedding_size(model)
    if requested is None:
        return size
    if not isinstance(requested, int) or not 1 <= requested <= size:
        raise invalid_argument(f"outputDimensionality must be between 1 and {size} for models/{model}.")
    return requested
