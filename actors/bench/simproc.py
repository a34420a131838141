"""The benchmark's one simulator, in its own process, controlled over its HTTP routes.

Every contestant talks to this one server through the real SDK. It runs as a
separate process (``python -m actors simulator``) rather than a thread of the
driver, so the in-process contestants do not share their interpreter (and GIL)
with the server, just as they would not share it with a real provider.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

_START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimulatorProcess:
    """``python -m actors simulator`` on a free loopback port; latency zero until told otherwise.

    >>> with SimulatorProcess() as sim:
    ...     sim.configure(latency="fixed", median_s=0.5)
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        port = _free_port()
        cmd = [sys.executable, "-m", "actors", "simulator", "--port", str(port)]
        cmd += ["--latency", "zero", "--seed", "0"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the simulator exited with code {self._proc.returncode}")
            try:
                self._request("GET", "/health")
                return self.url
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the simulator did not answer within {_START_TIMEOUT_S:g} s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change simulator knobs (``SimulatorSettings`` fields); returns the whole config."""
        result: dict[str, Any] = self._request("POST", "/config", changes)
        return result

    def reseed(self, seed: int) -> None:
        """Restart the latency/fault stream at ``seed`` (even when the seed is unchanged)."""
        self.configure(seed=seed + 1)
        self.configure(seed=seed)

    def reset_stats(self) -> None:
        self._request("POST", "/stats/reset", {})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/stats")
        return result

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
