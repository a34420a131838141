"""The engine: request → plan → dispatch → merge → report.

``intake``, ``documents`` and ``complexity`` read the request; ``decomposer`` (with
``templates``, ``hierarchical`` and ``plan_stream``) plans it into a ``dag``; ``orchestrator``
(an actor) drives it through ``scheduler`` and ``dispatch`` onto the agent pools, with
``admission`` and ``estimate`` guarding money; ``merge_step`` (``claims``, ``reconcile``,
``merger``, ``sections``) writes one answer; ``report`` and ``store`` keep it. ``recall`` and
``quick_take`` serve follow-ups and the quick answer; ``lifecycle`` finishes a task once."""
