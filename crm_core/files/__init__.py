"""Files in and out of tables (docs/integrations.md): CSV/XLSX imports run as background jobs
(`imports`, reading files with `readers`) and streamed exports (`exports`); uploaded files and
the attachment column type (`attachments`, docs/storage.md "Files")."""

from crm_core.files.exports import ExportService as ExportService
from crm_core.files.imports import ImportService as ImportService
