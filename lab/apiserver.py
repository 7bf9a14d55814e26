"""A stand-in kube-apiserver: TLS on the node address, `/healthz`, and which node answered.

haproxy checks the backends the way kubeadm's recipe does (HTTPS GET /healthz, expect 200), so
the stand-in needs exactly that: a `/healthz` that can be made to fail (500) while the process
keeps running, and a process that can be stopped. The body names the node so the client can
tell where round-robin sent it. Run as `python -m lab.apiserver` inside a node's namespace.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PORT = 6443


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        healthy = not os.path.exists(self.server.unhealthy_file)
        status = 200 if healthy or self.path != "/healthz" else 500
        body = f"{'ok' if status == 200 else 'unhealthy'} node={self.server.node}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # 50 requests a second: keep the log for what matters
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], node: str, unhealthy_file: str, context: ssl.SSLContext):
        super().__init__(addr, _Handler)
        self.node = node
        self.unhealthy_file = unhealthy_file
        self.context = context

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake runs in the request's thread, so a stuck client blocks only itself.
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super().finish_request(tls, client_address)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=PORT)
    ap.add_argument("--node", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--unhealthy-file", required=True)
    args = ap.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server = _Server((args.bind, args.port), args.node, args.unhealthy_file, context)
    print(f"apiserver {args.node} listening on {args.bind}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
