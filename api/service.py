"""The service endpoints: GET /models and /models/{id} (OpenAI's model list: the one served
model), /model/info (what the engine reports: quantization, memory, context window, live counters)
and /health (200 when the model is ready, with status `degraded` and the reason while the built-in
model stands in for the default one; 503 while it loads or after loading failed, with the reason;
never needs an API key, so it has its own router).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import EngineDep
from api.errors import LOADING_RETRY_AFTER_S, APIError
from api.protocol import ERROR_RESPONSES, HealthResponse, ModelCard, ModelInfo, ModelList

router = APIRouter(tags=["models"])
health_router = APIRouter(tags=["health"])

OWNED_BY = "nf4serve"


def _card(request: Request, engine: Any) -> ModelCard:
    created = int(getattr(engine, "started_at", request.app.state.created))
    return ModelCard(id=engine.model_name, created=created, owned_by=OWNED_BY)


@router.get("/models", response_model=ModelList, responses=ERROR_RESPONSES,
            summary="List the served model")
async def list_models(request: Request, engine: EngineDep) -> ModelList:
    return ModelList(data=[_card(request, engine)])


@router.get("/models/{model_id:path}", response_model=ModelCard, responses=ERROR_RESPONSES,
            summary="Describe a model")
async def get_model(model_id: str, request: Request, engine: EngineDep) -> ModelCard:
    card = _card(request, engine)
    if model_id != card.id:
        raise APIError(404, f"The model '{model_id}' does not exist; this server serves "
                       f"'{card.id}'.", param="model", code="model_not_found")
    return card


@router.get("/model/info", response_model=ModelInfo, responses=ERROR_RESPONSES,
            summary="Model, quantization, memory, context window and counters")
async def model_info(engine: EngineDep) -> ModelInfo:
    if engine.state not in ("ready", "stopping"):  # while draining, the model is still there
        reason = engine.error or "the model is still loading"
        raise APIError(500, f"No model is loaded: {reason}.", type="server_error",
                       code="model_not_loaded")
    return ModelInfo.model_validate(engine.info())


@health_router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse,
                     "description": "Loading, loading failed, or shutting down."}},
    summary="Liveness and readiness",
)
async def health(engine: EngineDep) -> JSONResponse:
    report = HealthResponse.model_validate(engine.health())
    if report.status in ("ok", "degraded"):  # degraded: the built-in model serves, say so
        return JSONResponse(report.model_dump(mode="json"))
    headers = {"Retry-After": str(LOADING_RETRY_AFTER_S)} if report.status == "loading" else None
    return JSONResponse(report.model_dump(mode="json"), status_code=503, headers=headers)
