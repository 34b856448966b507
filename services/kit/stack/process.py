"""One child server process: own session, log file, readiness polling and a family-wide stop.

A child's "family" is its process group plus every descendant, found through /proc: postgres
workers call setsid() and so leave the group, yet must not outlive a stop.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

_TAIL_BYTES = 64 * 1024
# After the leader exits, how long stragglers in its family get between SIGTERM and SIGKILL.
_STRAGGLER_GRACE = 2.0


class StackError(RuntimeError):
    """Root of every error the embedded stack raises."""


class ProcessExitedError(StackError):
    """A child process exited before it became ready."""


class ReadyTimeoutError(StackError):
    """A child process did not become ready within its timeout."""


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file, or a note when it cannot be read."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            data = fh.read()
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def user_ids(uid: int) -> tuple[int, int]:
    """Return (uid, primary gid) for a uid, using the uid as gid when it has no passwd entry."""
    try:
        return uid, pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid, uid


def _switch(user: int | None) -> tuple[int | None, int | None, list[int] | None]:
    """Return Popen's (user, group, extra_groups) to run the child as ``user``, no extra groups."""
    if user is None or user == os.geteuid():
        return None, None, None
    uid, gid = user_ids(user)
    return uid, gid, []


def run_command(
    argv: Sequence[str],
    *,
    log_path: Path,
    user: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> None:
    """Run a one-shot command to completion, appending its output to ``log_path``."""
    uid, gid, groups = _switch(user)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"--- run {' '.join(argv)}\n".encode())
        log.flush()
        try:
            code = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                timeout=timeout,
                user=uid,
                group=gid,
                extra_groups=groups,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"{argv[0]} timed out after {timeout}s:\n{log_tail(log_path)}"
            ) from exc
    if code != 0:
        raise StackError(f"{argv[0]} exited with code {code}:\n{log_tail(log_path)}")


class ManagedProcess:
    """A long-running child in its own session whose output goes to a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        signal_group: bool = True,
    ) -> None:
        """Describe the process; nothing runs until :meth:`start`.

        ``user`` runs the child as that uid (with its primary gid, no supplementary groups).
        ``signal_group`` False sends ``stop_signal`` to the leader only, for servers such as
        postgres whose leader shuts its own children down in order.
        """
        self.argv = list(argv)
        self.log_path = log_path
        self.name = name or Path(self.argv[0]).name
        self._env = None if env is None else dict(env)
        self._cwd = cwd
        self._user = user
        self._preexec_fn = preexec_fn
        self._stop_signal = stop_signal
        self._signal_group = signal_group
        self._proc: subprocess.Popen[bytes] | None = None
        # Descendants seen so far, as (pid, start time): found again by identity if the leader
        # dies first, since children that called setsid() (postgres does) leave its group.
        self._known: frozenset[tuple[int, str]] = frozenset()
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        """Return the leader's pid (also its process group id) while started."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """Return True while the leader process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the child in a new session; a no-op while it is already running."""
        if self.running:
            return
        uid, gid, groups = _switch(self._user)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {' '.join(self.argv)}\n".encode())
            log.flush()
            # A new session: a terminal's Ctrl-C does not reach the child, and the whole
            # group can be signalled at once via its pgid (== the leader's pid).
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                # Opt-in only; the user switch above needs no preexec_fn (Popen does it in C).
                preexec_fn=self._preexec_fn,
                start_new_session=True,
                close_fds=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        self.returncode = None
        self._known = frozenset()

    def wait_ready(
        self, check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02
    ) -> float:
        """Poll ``check`` until it returns True; return the seconds waited.

        Raises :class:`ProcessExitedError` (with the log tail) when the child exits first and
        :class:`ReadyTimeoutError` when ``timeout`` passes.
        """
        if self._proc is None:
            raise StackError(f"{self.name} was never started")
        started = time.monotonic()
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ProcessExitedError(
                    f"{self.name} exited with code {code} before it was ready; "
                    f"end of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if check():
                self._known |= _family(self._proc.pid, self._known)
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise ReadyTimeoutError(
                    f"{self.name} not ready after {timeout}s; "
                    f"end of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(interval)

    def group_alive(self) -> bool:
        """Return True while any live process of the child's group or its descendants exists."""
        return self._proc is not None and bool(_family(self._proc.pid, self._known))

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the child, its group and descendants (SIGKILL after ``timeout``); idempotent."""
        proc = self._proc
        if proc is None:
            return self.returncode
        leader = proc.pid
        known = self._known | _family(leader, self._known)
        if proc.poll() is None:
            _signal(leader, self._stop_signal, group=self._signal_group)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_family(leader, known)
                proc.wait()
        # Orphans (e.g. workers of a leader that crashed) get SIGTERM and a grace, then SIGKILL.
        for pid, _ in _family(leader, known):
            _signal(pid, signal.SIGTERM, group=False)
        if not _wait_family_gone(leader, known, _STRAGGLER_GRACE):
            _kill_family(leader, known)
            _wait_family_gone(leader, known, 5.0)
        self.returncode = proc.returncode
        self._proc = None
        self._known = frozenset()
        return self.returncode

    def __enter__(self) -> Self:
        """Start the child and return self."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the child and its group."""
        self.stop()


def _signal(pid: int, sig: signal.Signals, *, group: bool) -> None:
    """Send ``sig`` to the process or its whole group, ignoring ones already gone."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _family(leader: int, known: frozenset[tuple[int, str]]) -> set[tuple[int, str]]:
    """Return live (pid, start time) of group ``leader``, their descendants and live ``known``.

    Zombies do not count: dead orphans wait for init to reap them, which takes seconds under
    some container inits, and they hold nothing. Without /proc, only the group is probed.
    """
    table: dict[int, tuple[str, int, int, str]] = {}  # pid -> (state, ppid, pgrp, start)
    try:
        names = os.listdir("/proc")
    except OSError:
        try:
            os.killpg(leader, 0)
        except ProcessLookupError:
            return set()
        return {(leader, "")}
    for name in filter(str.isdigit, names):
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue
        # Fields after "pid (comm)": state, ppid, pgrp, ..., starttime is the 20th.
        table[int(name)] = (fields[0].decode(), int(fields[1]), int(fields[2]), fields[19].decode())
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = {pid for pid, row in table.items() if row[2] == leader}
    found |= {pid for pid, start in known if pid in table and table[pid][3] == start}
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return {(pid, table[pid][3]) for pid in found if table[pid][0] != "Z"}


def _kill_family(leader: int, known: frozenset[tuple[int, str]]) -> None:
    """SIGKILL the leader's group and every live member of its family."""
    _signal(leader, signal.SIGKILL, group=True)
    for pid, _ in _family(leader, known):
        _signal(pid, signal.SIGKILL, group=False)


def _wait_family_gone(leader: int, known: frozenset[tuple[int, str]], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the leader's family to die; return whether it did."""
    deadline = time.monotonic() + timeout
    while _family(leader, known):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
