"""A lab process: its own process group, its output stamped with the monotonic clock.

Every process (apiserver, client, log and event followers) is killed as a whole process group.
Each output line is stamped when it is read, with the same clock the client uses, so a log
line ("Server .../x is DOWN") can be placed on the drill's time line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

LineHook = Callable[[float, str], None]


class Proc:
    """Start, signal and stop one command; its output goes to `log` as `<monotonic> <line>`."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        on_line: LineHook | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.env = env
        self.argv = argv
        self.log = log
        self.on_line = on_line
        self.cwd = cwd
        self.popen: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Proc:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.cwd,
            env=self.env,
        )
        self._reader = threading.Thread(target=self._read, args=(self.popen,), name=f"log-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _read(self, popen: subprocess.Popen) -> None:
        with open(self.log, "ab", buffering=0) as log:
            log.write(f"{time.monotonic():.6f} === start {' '.join(self.argv)}\n".encode())
            assert popen.stdout is not None  # a pipe
            for raw in popen.stdout:
                now = time.monotonic()
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(f"{now:.6f} {line}\n".encode())
                if self.on_line:
                    self.on_line(now, line)

    def _exited(self) -> bool:
        """Whether the process has exited, without reaping it: until `stop` reaps it, its pid (the
        group's id) stays reserved, so signalling the group can never reach a stranger that the
        kernel gave the pid to since (pids wrap around quickly on a busy machine)."""
        if self.popen is None or self.popen.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    @property
    def running(self) -> bool:
        return self.popen is not None and not self._exited()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a daemon with its workers and helpers)."""
        if self.popen is None or self.popen.returncode is not None:
            return  # reaped: the pid may belong to someone else by now
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 2.0, sig: int = signal.SIGTERM) -> None:
        """`sig` (SIGTERM), then SIGKILL after `grace` seconds; SIGKILL to stragglers of the group
        (check scripts, workers) while the leader is unreaped; then reap it and let the output drain."""
        if self.popen is None:
            return
        self.kill(sig)
        deadline = time.monotonic() + grace
        while not self._exited() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill(signal.SIGKILL)
        self.popen.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        self.popen = None
