"""CRM domain layer: settings, storage, tenancy, auth, column types, errors."""
