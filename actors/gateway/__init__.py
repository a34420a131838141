"""The HTTP gateway that Ray Serve hosts (``serve_app.py`` is its entry point): the request
guard (``http_guard``), the Prometheus exposition (``metrics``) and the dashboard page."""
