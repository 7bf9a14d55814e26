"""The lab's stand-in apiserver on loopback, without the lab: its unhealthy state and its graceful shutdown.

Started as the lab starts it (`python -m lab.world.apiserver`, a self-signed EC certificate from openssl),
on 127.0.0.1 and a free port. The waits are deadlines for something to happen, not measurements.
"""

from __future__ import annotations

import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab.world import apiserver

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl for the certificate")


class StandIn:
    """One stand-in process; its output lines are kept in order as they come."""

    def __init__(self, tmp: Path, shutdown_delay: float):
        cert, key = apiserver.make_certificate(tmp, ["127.0.0.1"])
        self.unhealthy = tmp / "unhealthy"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.world.apiserver",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--node",
                "t1",
                "--cert",
                str(cert),
                "--key",
                str(key),
                "--unhealthy-file",
                str(self.unhealthy),
                "--shutdown-delay",
                str(shutdown_delay),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.expect("apiserver t1 listening on ")
        port = re.search(r":(\d+)$", first)
        assert port, first
        self.port = int(port.group(1))
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def _read(self) -> None:
        assert self.proc.stdout is not None  # a pipe
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str) -> str:
        """The next output line that starts with `prefix` (earlier lines are kept in `seen`)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line {prefix!r} within {WAIT} s; output so far: {self.seen}")

    def said(self, prefix: str) -> bool:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return any(line.startswith(prefix) for line in self.seen)

    def connect(self) -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return self.context.wrap_socket(sock)

    def get(self, path: str, tls: ssl.SSLSocket | None = None) -> tuple[int, str]:
        tls = tls or self.connect()
        with tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
        head, _, body = data.decode().partition("\r\n\r\n")
        return int(head.split(" ", 2)[1]), body.strip()

    def wait(self) -> int:
        return self.proc.wait(WAIT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)


@pytest.fixture
def start(tmp_path):
    started: list[StandIn] = []

    def make(shutdown_delay: float) -> StandIn:
        started.append(StandIn(tmp_path, shutdown_delay))
        return started[-1]

    yield make
    for s in started:
        s.close()


def test_it_drains_as_long_as_docs_design_recommends():
    """The stand-in's default --shutdown-delay is the one docs/design.md recommends (the arithmetic
    behind it is checked against the rendered haproxy.cfg in tests/test_userdata.py)."""
    design = (Path(__file__).resolve().parent.parent / "docs" / "design.md").read_text()
    [delay] = re.findall(r"We recommend \*\*(\d+) s\*\*", design)
    assert float(delay) == apiserver.SHUTDOWN_DELAY_S, "the lab must drain as long as docs/design.md recommends"


def test_healthy_it_answers_every_path_with_200_and_names_its_node(start):
    s = start(1.0)
    for path in ("/readyz", "/healthz", "/", "/readyz?verbose"):
        assert s.get(path) == (200, "ok node=t1"), path


def test_unhealthy_it_fails_readyz_and_healthz_and_serves_the_rest(start):
    s = start(1.0)
    s.unhealthy.touch()
    assert [s.get(p)[0] for p in ("/readyz", "/healthz", "/", "/version")] == [500, 500, 200, 200]
    assert s.get("/readyz") == (500, "unhealthy node=t1")
    s.unhealthy.unlink()
    assert s.get("/readyz")[0] == 200


def test_sigterm_fails_readyz_at_once_serves_the_rest_for_the_delay_then_exits(start):
    s = start(3.0)
    s.proc.send_signal(signal.SIGTERM)
    assert s.expect(apiserver.DRAINING) == f"{apiserver.DRAINING}; serving for 3 s more"
    answers = {p: s.get(p)[0] for p in ("/readyz", "/healthz", "/")}
    assert not s.said(apiserver.NOT_ACCEPTING), "the requests must have been answered within the delay"
    assert answers == {"/readyz": 500, "/healthz": 200, "/": 200}
    s.expect(apiserver.NOT_ACCEPTING)
    s.expect(apiserver.DRAINED)
    assert s.wait() == 0
    with pytest.raises(ConnectionRefusedError):
        s.connect()


def test_a_request_in_flight_when_it_stops_accepting_is_answered_before_it_exits(start):
    s = start(1.0)
    held = s.connect()  # accepted and handshaken; its request comes later
    s.proc.send_signal(signal.SIGTERM)
    s.expect(apiserver.NOT_ACCEPTING)
    deadline = time.monotonic() + WAIT
    while True:  # the listening socket closes just after the line
        try:
            s.connect().close()
        except ConnectionRefusedError:
            break
        except OSError:  # reset: it was in the accept queue when the listening socket closed
            pass
        assert time.monotonic() < deadline, "it must stop accepting"
        time.sleep(0.02)
    assert s.proc.poll() is None and not s.said(apiserver.DRAINED), "it must wait for the request in flight"
    assert s.get("/healthz", held) == (200, "ok node=t1")
    s.expect(apiserver.DRAINED)
    assert s.wait() == 0


def test_a_second_sigterm_ends_the_shutdown_at_once(start):
    s = start(60.0)
    s.proc.send_signal(signal.SIGTERM)
    s.expect(apiserver.DRAINING)
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 128 + signal.SIGTERM
    assert not s.said(apiserver.NOT_ACCEPTING)


def test_a_negative_shutdown_delay_is_refused_with_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.world.apiserver",
            "--bind",
            "127.0.0.1",
            "--node",
            "t1",
            "--cert",
            "c",
            "--key",
            "k",
            "--unhealthy-file",
            "u",
            "--shutdown-delay",
            "-1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--shutdown-delay -1: must be 0 or more seconds")
