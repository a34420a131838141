"""Ray Serve entry point: the HTTP gateway on :9090 (loopback by default).

The gateway itself (routes, guard, metrics, model check, dashboard page) is
``actors.gateway``; this is the surface a driver deploys it from. ``parallel-agents
start`` does it for you (``actors.runtime.control``); from a driver connected to a
running system, ``deploy(load_settings())`` serves it and returns its URL, and
``undeploy()`` stops Serve. The routes find the system's actors by name.
"""

from actors.gateway.app import APP_NAME, application, check_bind, deploy, undeploy

__all__ = ["APP_NAME", "application", "check_bind", "deploy", "undeploy"]
