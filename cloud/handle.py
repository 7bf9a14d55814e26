"""The cloud as the tests (and the benchmark) see it: start it, talk to it, stop it.

Runs in the project's virtualenv: the cloud itself runs in its own (`python -m cloud` in
.tools/cloud), and so do the openstacksdk calls (cloud/sdk_worker.py), one JSON line each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud import paths


class CloudFailed(Exception):
    pass


def missing() -> str | None:
    """Why the cloud cannot start here, or None."""
    if not paths.PYTHON.exists():
        return f"no cloud virtualenv at {paths.VENV}: `make setup-cloud` installs Keystone and Neutron there"
    return None


@dataclass
class SdkError:
    status: int | None
    details: str
    text: str


@dataclass
class Cloud:
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    ready_after: float | None = None
    _worker: subprocess.Popen | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def value(self, prefix: str) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise KeyError(prefix)

    @property
    def servers_not_running(self) -> str:
        """The cloud's one line saying why booted servers will not run (when cloud.json has no namespaces)."""
        return next((line for line in self.lines if line.startswith(paths.NOT_RUNNING)), paths.NOT_RUNNING)

    @property
    def run_folder(self) -> Path:
        return Path(self.value("run folder:"))

    def url(self, service: str) -> str:
        return self.value(f"{service}:")

    def sdk(self, code: str, admin: bool = False) -> Any:
        """The value of an openstacksdk snippet (`conn` is the member's connection, or the admin's);
        an SdkError if the cloud refused it."""
        with self._lock:
            if self._worker is None:
                self._worker = subprocess.Popen(
                    [str(paths.PYTHON), "-m", "cloud.sdk_worker"],
                    cwd=paths.ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(paths.ROOT)},
                )
            stdin, stdout = self._worker.stdin, self._worker.stdout
            assert stdin is not None and stdout is not None  # both are pipes
            stdin.write(json.dumps({"code": code, "admin": admin}) + "\n")
            stdin.flush()
            line = stdout.readline()
        if not line:
            raise CloudFailed("the openstacksdk worker exited")
        answer = json.loads(line)
        if "error" in answer:
            err = answer["error"]
            if err["status"] is None:
                raise CloudFailed(f"snippet failed: {err['details']}\n{code}")
            return SdkError(err["status"], err["details"] or "", err["text"])
        return answer["ok"]

    def close_worker(self) -> None:
        if self._worker is not None:
            if self._worker.stdin is not None:
                self._worker.stdin.close()
            self._worker.wait(timeout=30)
            self._worker = None


def _read(cloud: Cloud, ready: threading.Event) -> None:
    assert cloud.proc.stdout is not None  # a pipe
    for line in cloud.proc.stdout:
        cloud.lines.append(line.rstrip("\n"))
        if line.strip() == paths.READY:
            ready.set()
    ready.set()


def start(argv: Sequence[str] | None = None, timeout: float = 240) -> Cloud:
    """Start the cloud (by default `python -m cloud`; `make cloud` works too) and wait until ready."""
    reason = missing()
    if reason:
        raise CloudFailed(reason)
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv or [str(paths.PYTHON), "-m", "cloud"]),
        cwd=paths.ROOT,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(paths.ROOT)},
        start_new_session=True,
    )
    cloud = Cloud(proc)
    ready = threading.Event()
    threading.Thread(target=_read, args=(cloud, ready), daemon=True).start()
    if not ready.wait(timeout) or paths.READY not in cloud.lines:
        stop(cloud)
        raise CloudFailed("the cloud did not start:\n" + "\n".join(cloud.lines[-40:]))
    cloud.ready_after = time.monotonic() - started
    return cloud


def stop(cloud: Cloud, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    cloud.close_worker()
    if cloud.proc.poll() is None:
        cloud.proc.send_signal(sig)
    try:
        return cloud.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(cloud.proc.pid, signal.SIGKILL)
        cloud.proc.wait()
        raise CloudFailed(f"the cloud did not stop within {timeout:.0f} s of {signal.Signals(sig).name}") from None


@contextmanager
def running_cloud(argv: Sequence[str] | None = None) -> Iterator[Cloud]:
    cloud = start(argv)
    try:
        yield cloud
    finally:
        stop(cloud)


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (any session), with its start time so a reused pid is not confused."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        starts[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def alive(procs: dict[int, str]) -> list[int]:
    out = []
    for pid, start_time in procs.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start_time and fields[0] != "Z":
            out.append(pid)
    return out
