"""The platform operator's domain (`/admin`, docs/admin.md): operator sessions, the
read-only view of every company, the operator's actions and their audit log (`service`)."""
