"""The inference core: loads a Qwen3 model in bitsandbytes 4-bit and serves generation requests as
async streams. Shared by the REST API and the playground; imports neither fastapi nor gradio."""

from .config import BUILTIN_MODEL, DEFAULT_MODEL, EngineSettings
from .engine import Engine, RequestStream
from .errors import (
    ContextLengthError,
    EngineError,
    EngineOverloadedError,
    EngineStoppingError,
    GenerationError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotLoadedError,
    ModelUnavailableError,
    QuantizationError,
)
from .interface import GenerationStream, InferenceEngine
from .types import (
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    LogitsProcessor,
    SamplingDefaults,
    SamplingParams,
    Timings,
    TokenLogprob,
    Usage,
)

__all__ = [
    "BUILTIN_MODEL", "DEFAULT_MODEL", "ContextLengthError", "Engine", "EngineError",
    "EngineOverloadedError", "EngineStoppingError", "EngineSettings", "GenerationChunk", "GenerationError",
    "GenerationRequest", "GenerationResult", "GenerationStream", "InferenceEngine",
    "InvalidRequestError", "LogitsProcessor",
    "ModelLoadError", "ModelNotLoadedError", "ModelUnavailableError", "QuantizationError",
    "RequestStream", "SamplingDefaults", "SamplingParams", "Timings", "TokenLogprob", "Usage",
]
