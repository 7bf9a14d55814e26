"""The client: a fresh TCP+TLS connection and `GET /healthz` through the VIP every 20 ms.

Attempts start on a fixed schedule whatever earlier attempts do (each in its own thread), so a
one-second timeout does not blur when the service came back. Each attempt is printed as one
JSON line with its start and end on the monotonic clock, which is system-wide, so the lab can
place attempts next to its own fault injections and the daemons' log lines.

`python -m lab.world.client` runs inside the client namespace; `Recorder` starts it and collects.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.world.procs import Proc

INTERVAL = 0.02
TIMEOUT = 1.0


@dataclass(frozen=True)
class Attempt:
    start: float
    end: float
    ok: bool
    node: str | None
    error: str | None


CERT_PREFIX = "cert:"


def cert_id(der: bytes) -> str:
    """How the client names a server by its certificate (the lab maps it to the node: `Recorder.identities`)."""
    return CERT_PREFIX + hashlib.sha256(der).hexdigest()[:16]


def _attempt(host: str, port: int, context: ssl.SSLContext, timeout: float) -> tuple[bool, str | None, str | None]:
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("attempt timed out")
        return remaining

    try:
        with socket.create_connection((host, port), timeout=left()) as sock:
            sock.settimeout(left())
            with context.wrap_socket(sock) as tls:
                cert = tls.getpeercert(binary_form=True)
                tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    tls.settimeout(left())
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
    except (OSError, ssl.SSLError) as e:
        return False, None, f"{type(e).__name__}: {e}"
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "?"
    # The stand-in names its node in the body; a real apiserver is known by its serving certificate.
    node = body.decode(errors="replace").strip().partition("node=")[2] or (cert_id(cert) if cert else None)
    return status == "200", node, None if status == "200" else f"HTTP {status}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--interval", type=float, default=INTERVAL)
    ap.add_argument("--timeout", type=float, default=TIMEOUT)
    args = ap.parse_args(argv)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    out_lock = threading.Lock()

    def one() -> None:
        start = time.monotonic()
        ok, node, error = _attempt(args.host, args.port, context, args.timeout)
        line = json.dumps({"s": start, "e": time.monotonic(), "ok": ok, "node": node, "err": error})
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    tick = time.monotonic()
    while True:
        threading.Thread(target=one, daemon=True).start()
        tick += args.interval
        time.sleep(max(0.0, tick - time.monotonic()))


class Recorder:
    """Runs the client in a namespace and keeps every attempt it reports."""

    def __init__(self, argv_prefix: list[str], host: str, port: int, log: Path, cwd: Path):
        self.attempts: list[Attempt] = []
        # cert_id -> node name, for servers known by their certificate (the real apiservers)
        self.identities: dict[str, str] = {}
        self._lock = threading.Lock()
        argv = [*argv_prefix, sys.executable, "-m", "lab.world.client", "--host", host, "--port", str(port)]
        self.proc = Proc("client", argv, log, self._on_line, cwd=cwd)

    def _on_line(self, _t: float, line: str) -> None:
        if not line.startswith("{"):
            return
        d = json.loads(line)
        node = d["node"]
        if node is not None and node.startswith(CERT_PREFIX):
            node = self.identities.get(node, node)
        with self._lock:
            self.attempts.append(Attempt(d["s"], d["e"], d["ok"], node, d["err"]))

    def start(self) -> None:
        self.proc.start()

    def stop(self) -> None:
        self.proc.stop()

    def between(self, t0: float, t1: float = float("inf")) -> list[Attempt]:
        """Attempts that ended at or after t0 and started before t1 (sorted by start)."""
        with self._lock:
            return sorted((a for a in self.attempts if a.end >= t0 and a.start < t1), key=lambda a: a.start)


if __name__ == "__main__":
    main(sys.argv[1:])
