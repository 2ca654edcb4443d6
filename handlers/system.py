"""`/health` and `/ready`."""

from __future__ import annotations

from crm_core import metrics
from crm_core.errors import ServiceUnavailable
from handlers.routing import Call, Public, RouteTable
from models.base import StatusOut

routes = RouteTable("system")


@routes.get("/health", access=Public(), summary="The process is up", response=StatusOut)
async def health(call: Call) -> StatusOut:
    return StatusOut(status="ok")


@routes.get(
    "/ready",
    access=Public(),
    summary="The database and the task broker are reachable",
    response=StatusOut,
    errors=(503,),
)
async def ready(call: Call) -> StatusOut:
    if not await call.services.storage.ping():
        metrics.BACKEND_ERRORS.labels("database").inc()
        raise ServiceUnavailable("The database is not reachable")
    queue = call.services.sms_queue
    if queue is not None and not await queue.ping():
        metrics.BACKEND_ERRORS.labels("broker").inc()
        raise ServiceUnavailable("The task broker (Redis) is not reachable")
    return StatusOut(status="ready")
