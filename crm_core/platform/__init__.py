"""What every domain uses: settings, storage (the one package that builds database clients),
logs, metrics, errors, ids, clock, caches, indexes, the request's context and value rules.

No service of its own and no exports: each module is imported where it is needed, so a
domain that needs the clock does not load the database driver."""
