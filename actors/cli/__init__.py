"""The command line, ``parallel-agents`` (``main``), and its live terminal view
(``live_view``)."""
