"""A stand-in kube-apiserver: TLS on the node address, `/readyz` and `/healthz`, and which node answered.

haproxy checks the backends with an HTTPS GET of /readyz (expect 200), so the stand-in needs what
kube-apiserver does there:
- an unhealthy state (the unhealthy file exists) in which /readyz and /healthz both answer 500
  while the process keeps running, as a real apiserver that has lost etcd fails both (the client
  asks /healthz, so it counts the answers of an unhealthy backend as failures);
- kube-apiserver's graceful shutdown: on SIGTERM /readyz answers 500 at once while everything else
  is served as before for the shutdown delay (--shutdown-delay-duration); then it stops accepting,
  finishes the requests in flight and exits. /healthz answers 200 until then. A second SIGTERM
  ends it at once, as it does kube-apiserver.
The body names the node so the client can tell where round-robin sent it. Each step of the
shutdown is printed, so the lab can place it on the drill's time line. Run as
`python -m lab.world.apiserver` inside a node's namespace.
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cluster.plan import shutdown_delay_s

PORT = 6443
READY_PATH = "/readyz"
HEALTH_PATH = "/healthz"
# The --shutdown-delay-duration we recommend for kube-apiserver with our haproxy settings
# (cluster.plan.shutdown_delay_s): the lab runs those settings, so it drains as long.
SHUTDOWN_DELAY_S = float(shutdown_delay_s())
# What the shutdown prints, in order (the drain drill finds NOT_ACCEPTING in the log).
DRAINING = "shutdown: /readyz fails"
NOT_ACCEPTING = "shutdown: no longer accepting"
DRAINED = "shutdown: requests in flight finished"


def make_certificate(folder: Path, addresses: Sequence[str]) -> tuple[Path, Path]:
    """A self-signed EC certificate (cheap handshakes) for `addresses`, and its key, in `folder`."""
    cert, key = folder / "apiserver.crt", folder / "apiserver.key"
    sans = ",".join(f"IP:{a}" for a in addresses)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    argv += ["-days", "2", "-subj", "/CN=kube-apiserver", "-addext", f"subjectAltName={sans}"]
    done = subprocess.run([*argv, "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl req failed ({done.returncode}): {done.stderr.strip()}")
    return cert, key


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.partition("?")[0]
        unhealthy = path in (READY_PATH, HEALTH_PATH) and os.path.exists(self.server.unhealthy_file)
        ok = not unhealthy and not (path == READY_PATH and self.server.draining.is_set())
        body = f"{'ok' if ok else 'unhealthy'} node={self.server.node}\n".encode()
        self.send_response(200 if ok else 500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # 50 requests a second: keep the log for what matters
        pass


class _Server(ThreadingHTTPServer):
    # Request threads are joined by server_close(): that is how the requests in flight finish.
    daemon_threads = False
    block_on_close = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], node: str, unhealthy_file: str, context: ssl.SSLContext):
        super().__init__(addr, _Handler)
        self.node = node
        self.unhealthy_file = unhealthy_file
        self.context = context
        self.draining = threading.Event()

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake runs in the request's thread, so a stuck client blocks only itself
        # (and a shutdown waits for it at most this long).
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super().finish_request(tls, client_address)


def _say(line: str) -> None:
    print(line, flush=True)


def serve(server: _Server, shutdown_delay: float, started: str) -> None:
    """Serve until SIGTERM, then shut down as kube-apiserver does (see the module's docstring).
    `started` is printed once a SIGTERM can no longer kill the process outright."""
    # SIGTERM is taken by sigwait, never by a handler: every thread blocks it (threads inherit the mask).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="accept", daemon=True).start()
    _say(started)
    signal.sigwait({signal.SIGTERM})
    server.draining.set()
    _say(f"{DRAINING}; serving for {shutdown_delay:g} s more")
    threading.Thread(target=_exit_on_second_term, name="second-term", daemon=True).start()
    time.sleep(shutdown_delay)
    _say(NOT_ACCEPTING)
    server.shutdown()  # the accept loop ends ...
    server.server_close()  # ... the listening socket closes, and the request threads are joined
    _say(DRAINED)


def _exit_on_second_term() -> None:
    signal.sigwait({signal.SIGTERM})
    _say("shutdown: second SIGTERM, exiting at once")
    os._exit(128 + signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=PORT, help=f"default {PORT}; 0: any free port (printed)")
    ap.add_argument("--node", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--unhealthy-file", required=True)
    delay_help = f"seconds to keep serving after SIGTERM with /readyz failing (default {SHUTDOWN_DELAY_S:g})"
    ap.add_argument("--shutdown-delay", type=float, default=SHUTDOWN_DELAY_S, help=delay_help)
    args = ap.parse_args(argv)
    if args.shutdown_delay < 0:
        ap.error(f"--shutdown-delay {args.shutdown_delay:g}: must be 0 or more seconds")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server = _Server((args.bind, args.port), args.node, args.unhealthy_file, context)
    serve(server, args.shutdown_delay, f"apiserver {args.node} listening on {args.bind}:{server.server_address[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])
