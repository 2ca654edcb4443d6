"""`/api/data/{table}/aggregate` and the same under the built-in routes (`/api/leads/aggregate`,
...): totals and groups of the rows the list would return (issue #23 §1)."""

from __future__ import annotations

from dataclasses import replace

from crm_core.tables.access import Level
from crm_core.tables.aggregate_bodies import AggregateOut, AggregateQuery
from crm_core.tables.builtin import BUILTIN_TABLES
from handlers.routing import Call, RouteTable, TableAccess

routes = RouteTable("data")

AGGREGATE = "/api/data/{table}/aggregate"


@routes.get(
    AGGREGATE,
    access=TableAccess(level=Level.READ),
    summary="Totals and groups of rows",
    query=AggregateQuery,
    response=AggregateOut,
)
async def aggregate_rows(call: Call, query: AggregateQuery) -> AggregateOut:
    """`metrics` over the rows `filters` selects (the same rows as the list for the same
    caller), grouped by up to two columns. 400 names the parameter: an unknown column, a
    bucket on a column that is not a date, a numeric metric on a column that is not a number,
    more than AGGREGATE_MAX_GROUPS groups."""
    result = await call.services.aggregates.aggregate(call.ctx, call.tbl, query.to_request())
    return AggregateOut.from_result(result)


# the built-in tables' copies, as handlers/entities.py makes them for the row routes
for _spec in BUILTIN_TABLES:
    _route = routes.routes[0]
    assert isinstance(_route.access, TableAccess)
    routes.routes.append(
        replace(
            _route,
            path=AGGREGATE.replace("/api/data/{table}", f"/api/{_spec['slug']}"),
            access=replace(_route.access, fixed_table=_spec["key"]),
            tag=_spec["slug"],
            summary=_route.summary.replace("rows", _spec["name"].lower()),
            operation_id=f"{_spec['key']}_{_route.handler.__name__}",
        )
    )
