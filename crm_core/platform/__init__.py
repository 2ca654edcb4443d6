"""What every domain uses: settings, storage (the one module that builds database
clients), logs, metrics, errors, ids, clock, caches, indexes, the password rule."""
