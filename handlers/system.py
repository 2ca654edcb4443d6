"""`/health` and `/ready`."""

from __future__ import annotations

from crm_core.platform import metrics
from crm_core.platform.errors import UNREACHABLE_SERVICES, ServiceUnavailable
from crm_core.platform.storage import DATABASE
from handlers.middlewares import BROKER
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
    """200 when the database answers a ping and, with Redis, the task broker does too;
    otherwise 503 `service_unavailable` with `Retry-After`, whose `details` name each service
    that did not answer (`{"service": "database"|"broker", "message": "not reachable"}`)."""
    services = call.services
    down = []
    if not await services.storage.ping():
        down.append(DATABASE)
    queue = services.queue.probe
    if queue is not None:
        if await queue.ping():
            services.storage.outages.up(BROKER)
        else:
            services.storage.outages.down(BROKER, "the Redis ping failed")
            down.append(BROKER)
    if down:
        for service in down:
            metrics.BACKEND_ERRORS.labels(service).inc()
        retry_after = services.settings.unavailable_retry_after_seconds
        error = ServiceUnavailable.unreachable(down[0], retry_after)
        if len(down) > 1:
            names = " and ".join(UNREACHABLE_SERVICES[s].lower() for s in down)
            error.message = f"{names[0].upper()}{names[1:]} are not reachable"
            error.details = [{"service": s, "message": "not reachable"} for s in down]
        raise error
    return StatusOut(status="ready")
