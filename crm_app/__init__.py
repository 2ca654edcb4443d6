"""The composition root: the `crm` command builds the app, the worker and the tools from the
domain (crm_core), its HTTP face (handlers) and its tasks (tasks)."""
