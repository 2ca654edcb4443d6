"""The company's audit trail (docs/history.md "Audit trail")."""
