"""Custom tables: definitions (`meta`), rows (`rows`) and who may reach them (`access`)."""
