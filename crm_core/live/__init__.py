"""Live events (issue #25, docs/api.md "Live events"): row, schema and campaign changes pushed
to the connected clients who may see them, over WebSocket or SSE, across processes."""
