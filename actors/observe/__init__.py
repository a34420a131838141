"""What the system tells its operators: tracing spans, running statistics, the metrics Ray
exports for pools and tasks, and plots. Depends only on ``actors.models``, ``config`` and
``errors``, so every layer above may report through it."""
