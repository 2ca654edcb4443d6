"""Files in and out of tables: CSV/XLSX import and export (docs/integrations.md)."""
