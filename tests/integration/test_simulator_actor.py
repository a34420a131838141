"""The simulator hosted in a Ray actor answers the real SDK and reports its stats."""

from __future__ import annotations

import anthropic
import pytest
import ray

from actors.config import SimulatorSettings
from actors.sim.simulator import SimulatorActor

pytestmark = pytest.mark.ray


async def test_simulator_actor_serves_the_sdk(ray_session) -> None:
    actor = SimulatorActor.remote(SimulatorSettings(latency="zero"))
    try:
        url = await actor.start.remote()
        assert url == await actor.url.remote()
        client = anthropic.AsyncAnthropic(api_key="sim", base_url=url, max_retries=0)
        message = await client.messages.create(
            model="claude-haiku-5-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
        thinking, text = message.content  # the 5.x models think first
        assert thinking.type == "thinking" and text.type == "text"
        assert text.text.startswith("[simulated] ")

        await actor.reconfigure.remote({"rate_529": 1.0})
        with pytest.raises(anthropic.OverloadedError):
            await client.messages.create(
                model="claude-haiku-5-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
            )
        await client.close()

        stats = await actor.stats.remote()
        assert stats["requests"] == 2
        assert stats["status_counts"] == {"200": 1, "529": 1}
        await actor.reset_stats.remote()
        assert (await actor.stats.remote())["requests"] == 0
    finally:
        ray.kill(actor)
