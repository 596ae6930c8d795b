"""The wire format of /api/v1: every request and response body as a pydantic model.

Constrained fields are defined once (`api.protocol.common`) and shared by `/generate`,
`/completions` and `/chat/completions`, so validation and the OpenAPI page agree. Unknown request fields are ignored.
Each request model turns itself into the engine's own parameters (`to_sampling_params()`,
`to_generation_request()`); the engine never sees HTTP types.
"""

from api.protocol.chat import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCallOut,
    TokenLogprob,
    ToolCallOut,
    TopLogprob,
)
from api.protocol.common import (
    ERROR_RESPONSES,
    ErrorDetail,
    ErrorResponse,
    TimingsInfo,
    UsageInfo,
    new_id,
    now,
)
from api.protocol.completions import (
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from api.protocol.generate import (
    GenerateChunk,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelCard,
    ModelInfo,
    ModelList,
)
from api.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

__all__ = [
    "ERROR_RESPONSES",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessageOut",
    "ChoiceLogprobs",
    "ChunkChoice",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionChunkChoice",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionResponse",
    "DeltaFunctionCall",
    "DeltaMessage",
    "DeltaToolCall",
    "DetokenizeRequest",
    "DetokenizeResponse",
    "ErrorDetail",
    "ErrorResponse",
    "FunctionCallOut",
    "GenerateChunk",
    "GenerateRequest",
    "GenerateResponse",
    "HealthResponse",
    "ModelCard",
    "ModelInfo",
    "ModelList",
    "TimingsInfo",
    "TokenizeRequest",
    "TokenizeResponse",
    "TokenLogprob",
    "ToolCallOut",
    "TopLogprob",
    "UsageInfo",
    "new_id",
    "now",
]
