"""Bringing the system up and down: ``system`` (Ray, the limiter, the pools, the
orchestrator, the simulator), ``control`` (``parallel-agents start|stop|status``: the head,
the HTTP gateway and the bot) and ``services`` (what ``start`` recorded for ``stop``)."""
