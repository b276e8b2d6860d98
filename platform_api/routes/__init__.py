"""The API's routers, one module per area, registered in :func:`platform_api.app.create_app`."""
