"""The platform operator's domain (`/admin`, docs/admin.md): operator sessions, the
read-only view of every company, the operator's actions and their audit log (`service`)."""

from crm_core.admin.service import AdminService as AdminService
