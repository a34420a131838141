"""Polling with a deadline, for conditions no event announces (pool sizes, task progress)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float = 60.0, every_s: float = 0.1) -> T:
    """The first truthy value of ``predicate()``; fails the test after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not reached within {timeout_s:g} s")
