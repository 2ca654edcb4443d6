"""aiohttp views, one module per endpoint group; `handlers.app.create_app` wires them."""
