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
