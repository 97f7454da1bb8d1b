"""Operations: health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import RelayDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness and database reachability")
async def healthz(relay: RelayDep) -> dict[str, str]:
    await relay.storage.get_account("00000000-0000-0000-0000-000000000000")
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(relay: RelayDep) -> Response:
    return Response(generate_latest(relay.metrics.registry), media_type=CONTENT_TYPE_LATEST)
