"""parallel-agents: many Claude agents in parallel on one request, on Ray.

The flow reads through the modules: ``intake`` (clean the text) → ``complexity``
and ``decomposer`` (plan) → ``dag`` → ``orchestrator`` (dispatch to ``pool``s of
``agent``s chosen by the ``balancer``, sized by ``scaling``) → ``merger`` →
``report``. ``llm`` holds the client, the rate limiter, prices and the
simulator; ``system`` brings everything up; ``cli`` is the command line.
"""

__version__ = "0.1.0"
