"""How the commands log: lines on stderr, since stdout is for the answer."""

from __future__ import annotations

import logging
import sys


def log_to_stderr(verbose: bool) -> None:
    """Log lines on stderr: INFO with ``-v``, else WARNING."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
