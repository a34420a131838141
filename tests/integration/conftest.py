"""One real Ray instance for the whole integration session, sized for this 2-core machine."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray (no dashboard) shared by every integration test."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def serve_url(ray_session):
    """The real Serve app on a free loopback port, up for the whole session.

    The app finds the system's actors by name per request, so it serves whichever
    system a test module has started.
    """
    from ray import serve

    import serve_app
    from actors.config import Settings

    settings = Settings().with_overrides(http_port=free_port())
    url = serve_app.deploy(settings)
    yield url
    serve.shutdown()
