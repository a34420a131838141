"""parallel-agents: many Claude agents in parallel on one request, on Ray.

The flow reads through the layers, top to bottom: the front ends (``cli``, ``bot``,
``bench``, and the top-level ``bot.py`` and ``serve_app.py``) → ``runtime`` (bring the
system up) → ``gateway`` (HTTP) and ``sim`` (the simulated provider) → ``engine``
(request → plan → dispatch → merge → report) → ``agents`` (agent actors and their pools)
→ ``llm`` (model calls, the rate limiter, prices) → ``observe`` (tracing, statistics) →
the modules here that every layer shares: ``models``, ``config``, ``errors``,
``conversation`` and ``home_lock``. Imports point only downward
(``tests/unit/test_layers.py``).
"""

__version__ = "0.1.0"
