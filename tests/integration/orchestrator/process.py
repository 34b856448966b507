"""A dedicated orchestrator process next to the session's, for tests that kill or configure one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from services.kit.devstack import Platform
from services.kit.stack import free_port, port_open


class Orchestrator:
    """An orchestrator process on its own port that a test starts, kills and restarts."""

    def __init__(self, platform: Platform, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = log
        self.env = {
            **platform.env(),
            "ORCHESTRATOR_PORT": str(self.port),
            "ORCHESTRATOR_HOST": "127.0.0.1",
            "ORCHESTRATOR_ROUTER_TARGET": f"127.0.0.1:{platform.ports['router']}",
            "ORCHESTRATOR_KNOWLEDGE_TARGET": f"127.0.0.1:{platform.ports['knowledge']}",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    @property
    def target(self) -> str:
        """host:port of its gRPC server."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [sys.executable, "-m", "services.orchestrator"], env=self.env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        for _ in range(600):
            if port_open(self.port):
                return
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"the orchestrator did not start; see {self.log}")

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
            self.kills += 1
