"""The import task: takes ids (tenant, job, the user who confirmed it), builds that user's
context as it is now (a user deactivated meanwhile gets no further) and runs the import."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from crm_core.accounts.auth import context_for_user
from crm_core.files.imports import ImportService
from crm_core.platform.errors import CrmError
from crm_core.platform.settings import Settings
from crm_core.platform.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class FilesRuntime:
    """What the import task uses, held in the broker's state by whoever runs the receiver."""

    settings: Settings
    storage: Storage
    imports: ImportService


async def run_import(
    runtime: FilesRuntime, task_id: str, tenant_id: str, job_id: str, user_id: str
) -> None:
    try:
        ctx = await context_for_user(runtime.storage, tenant_id, user_id)
    except CrmError as exc:
        db = runtime.storage.tenant_db(tenant_id)
        await runtime.imports.refuse(db, tenant_id, job_id, user_id, exc.message)
        return
    await runtime.imports.run(ctx, job_id, task_id)
