"""The import task: takes ids (tenant, job, the user who confirmed it), builds that user's
context as it is now (a user deactivated meanwhile gets no further) and runs the import."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from crm_core.auth import context_for_user
from crm_core.columns import default_column_types
from crm_core.errors import CrmError
from crm_core.files.imports import JOBS, ImportService
from crm_core.filters import FilterBuilder, default_filter_operators
from crm_core.settings import Settings
from crm_core.storage import Storage
from crm_core.tables.definitions import utcnow
from crm_core.tables.rows import RowService
from crm_core.validators import default_validators

log = logging.getLogger(__name__)


@dataclass
class FilesRuntime:
    """What the import task uses, held in the broker's state by whoever runs the receiver."""

    settings: Settings
    storage: Storage
    imports: ImportService


def make_runtime(settings: Settings, storage: Storage, events: Any = None) -> FilesRuntime:
    """`events`: the row listeners (the webhook service) told about imported rows."""
    rows = RowService(
        default_column_types(), FilterBuilder(default_filter_operators()), default_validators()
    )
    rows.events = events
    return FilesRuntime(settings, storage, ImportService(rows, settings))


async def run_import(
    runtime: FilesRuntime, task_id: str, tenant_id: str, job_id: str, user_id: str
) -> None:
    try:
        ctx = await context_for_user(runtime.storage, tenant_id, user_id)
    except CrmError as exc:
        from bson import ObjectId

        db = runtime.storage.tenant_db(tenant_id)
        now = utcnow()
        await db[JOBS].update_one(
            {"_id": ObjectId(job_id), "state": "queued"},
            {
                "$set": {
                    "state": "failed",
                    "message": exc.message,
                    "finished_at": now,
                    "updated_at": now,
                }
            },
        )
        return
    await runtime.imports.run(ctx, job_id, task_id)
