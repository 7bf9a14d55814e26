"""`python -m lab.hypervisor`: where the loopback cloud's servers run, each as a lab node.

The compute emulation (`cloud.compute.AgentHypervisor`) sends one JSON line per boot, delete and
power action on stdin, as Nova's conductor casts to nova-compute; this process runs them:
- boot: the server's port wired to the tenant network that Neutron holds (`lab.world.tenant`), a
  node made as the lab makes one (`lab.world.harness.make_node`: its own Docker engine, sshd, the
  stand-in apiserver), the stand-in images loaded, and the user_data as Nova received it handed
  to the real cloud-init (`first_boot`), with the key pair's public key for the image's user;
- delete: the node powered off and removed, its port unwired;
- power: stop, start and reboot as the lab's power operations (`LabNode.power_off` / `power_on`).
Every second it reads Neutron again (`Tenant.refresh`): the firewall and the router's NAT follow
what Neutron holds. While any node exists it holds the lab's machine-wide lock (/run/kha-lab.lock),
so a lab and the cloud's nodes never share this machine's two cores.

On EOF or SIGTERM it removes every node and namespace it made, and exits.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cloud.compute import Keystone, Neutron
from cloud.paths import HYPERVISOR_LOCK
from lab.world import images, tenant, topology
from lab.world.apiserver import make_certificate
from lab.world.harness import (
    CONTROL_PLANES,
    LOCK,
    STAND_IN,
    acquire_lock,
    first_boot,
    fit_user_data,
    make_node,
)
from lab.world.node import LabNode
from lab.world.tenant import Attached, NodeWire, Tenant
from userdata import cloudconfig

LOCK_TIMEOUT_S = 1800.0  # a boot waits this long for a lab elsewhere on the machine to finish
REFRESH_S = 1.0


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


@dataclass
class Server:
    id: str
    name: str
    port_id: str
    user_data: str  # as the VM's metadata service hands it over: decoded
    public_key: str
    lock: threading.Lock = field(default_factory=threading.Lock)  # one action at a time
    attached: Attached | None = None
    node: LabNode | None = None
    deleted: bool = False


class Host:
    """The servers this hypervisor runs, on one tenant network."""

    def __init__(self, net: Tenant, workdir: Path, known_hosts: Path, control_plane: str = STAND_IN):
        self.control_plane = control_plane
        self.tenant = net
        self.workdir = workdir
        self.known_hosts = known_hosts
        self.servers: dict[str, Server] = {}
        self._lab_lock: IO[str] | None = None
        self._lock = threading.Lock()
        self._images = threading.Lock()
        self._lab_lock_guard = threading.Lock()  # not self._lock: a boot waits under it

    # --- the machine-wide lab lock, held while any node exists -----------------------------
    def _hold_lab_lock(self, server: Server) -> bool:
        """Hold the lab lock (False: the server was deleted while the boot waited for it)."""
        with self._lab_lock_guard:
            if self._lab_lock is not None:
                return True
            say(f"taking the lab lock {LOCK} (held while any node exists)")
            t0 = time.monotonic()
            self._lab_lock = acquire_lock(LOCK_TIMEOUT_S, abort=lambda: server.deleted)
            if self._lab_lock is not None:
                say(f"lab lock taken after {time.monotonic() - t0:.1f} s")
            return self._lab_lock is not None

    def _release_lab_lock(self) -> None:
        with self._lab_lock_guard, self._lock:
            if self._lab_lock is not None and not any(s.node for s in self.servers.values()):
                self._lab_lock.close()
                self._lab_lock = None

    # --- actions ------------------------------------------------------------------------------
    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "boot":
            server = Server(
                msg["id"],
                msg["name"],
                msg["ports"][0]["id"] if msg.get("ports") else "",
                base64.b64decode(msg.get("user_data") or "").decode(),
                msg.get("public_key") or "",
            )
            with self._lock:
                self.servers[server.id] = server
            threading.Thread(target=self._guarded, args=(self.boot, server), daemon=True).start()
        elif op == "delete" and msg["id"] in self.servers:
            server = self.servers[msg["id"]]
            server.deleted = True  # a boot still waiting for the lab lock gives up
            threading.Thread(target=self._guarded, args=(self.delete, server), daemon=True).start()
        elif op == "power" and msg["id"] in self.servers:
            server = self.servers[msg["id"]]
            threading.Thread(target=self._guarded, args=(self.power, server, msg["action"]), daemon=True).start()

    def _guarded(self, action, server: Server, *args: Any) -> None:
        try:
            with server.lock:
                if action == self.delete or not server.deleted:
                    action(server, *args)
        except Exception as err:  # noqa: BLE001 - one server's failure is logged; the rest run on
            say(f"{server.name} ({server.id}): {action.__name__} failed: {err}")
            traceback.print_exc(file=sys.stdout)

    def boot(self, server: Server) -> None:
        if not server.port_id:
            say(f"{server.name}: no port, nothing to run")
            return
        started = time.monotonic()
        ns = f"{tenant.PREFIX}n-{re.sub(r'[^A-Za-z0-9-]', '-', server.name)[:24]}-{server.id[:8]}"
        server.attached = a = self.tenant.attach(server.port_id, ns)
        if not server.user_data.strip():
            say(f"{server.name}: no user_data: its port is wired at {a.address}, nothing runs on it")
            return
        if not self._hold_lab_lock(server):
            return
        nodedir = self.workdir / server.id
        nodedir.mkdir(parents=True)
        host_key = nodedir / "ssh_host_ed25519_key"
        topology.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{server.name}", "-f", str(host_key)])
        assert self.tenant.held is not None  # read by attach
        pairs = self.tenant.held.port(server.port_id).pairs
        certificate = make_certificate(nodedir, [a.address, *pairs])
        server.node = node = make_node(server.name, ns, a.address, nodedir, host_key, certificate, self.control_plane)
        user_data, notes = fit_user_data(server.user_data)
        for note in notes:
            say(f"{server.name}: substitution: {note}")
        refs = {name: run.image for name, run in cloudconfig.docker_runs(user_data).items()}
        with self._images:
            tarball = images.ensure(refs, self.workdir)
        if node.kubelet is None:
            node.apiserver.start()
        first_boot(node, tarball, user_data, server.public_key)
        if node.kubelet is not None:
            node.kubelet.start()  # it runs the static pods kubeadm writes, once an operator runs kubeadm
        kind, blob = Path(f"{host_key}.pub").read_text().split()[:2]
        with self._lock, self.known_hosts.open("a") as out:
            out.write(f"{a.address} {kind} {blob}\n")
        say(f"{server.name}: booted at {a.address} in namespace {ns} ({time.monotonic() - started:.1f} s)")

    def delete(self, server: Server) -> None:
        server.deleted = True
        node, a = server.node, server.attached
        if node is not None:
            node.tear_down()
        if a is not None:
            self.tenant.detach(a)
            with self._lock:
                kept = [line for line in _lines(self.known_hosts) if not line.startswith(f"{a.address} ")]
                self.known_hosts.write_text("".join(kept))
        shutil.rmtree(self.workdir / server.id, ignore_errors=True)
        with self._lock:
            self.servers.pop(server.id, None)
        self._release_lab_lock()
        say(f"{server.name}: deleted")

    def power(self, server: Server, action: str) -> None:
        node, a = server.node, server.attached
        if node is None or a is None:
            return
        wire = NodeWire(self.tenant, a)
        if action in ("stop", "reboot"):
            node.power_off(wire)
        if action == "reboot":
            time.sleep(1.0)
        if action in ("start", "reboot"):
            node.power_on(wire)
        say(f"{server.name}: {action}")

    def refresh_forever(self, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_S):
            try:
                if self.tenant.refresh():
                    say("firewall and NAT rewritten from Neutron")
            except Exception as err:  # noqa: BLE001 - Neutron busy: the next second reads again
                say(f"reading Neutron failed: {err}")

    def shutdown(self) -> None:
        for server in list(self.servers.values()):
            self._guarded(self.delete, server)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True) if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.hypervisor", description=__doc__)
    ap.add_argument("--keystone", required=True)
    ap.add_argument("--neutron", required=True)
    ap.add_argument("--network", required=True, help="the tenant network's name")
    ap.add_argument("--ready", type=Path, required=True, help="written (JSON) once the network is up")
    ap.add_argument("--known-hosts", type=Path, required=True)
    ap.add_argument("--control-plane", choices=CONTROL_PLANES, default=STAND_IN)
    args = ap.parse_args(argv)
    password = os.environ.pop("KHA_CLOUD_NOVA_PASSWORD", "")

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    held = open(HYPERVISOR_LOCK, "a")  # noqa: SIM115 - held until this process exits
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another cloud on this machine runs its servers (it holds {HYPERVISOR_LOCK})", file=sys.stderr)
        return 3
    topology.cleanup(tenant.PREFIX, tenant.WORKDIR_PREFIX)
    workdir = Path(tempfile.mkdtemp(prefix=tenant.WORKDIR_PREFIX, dir=topology.WORKDIR_PARENT))
    workdir.chmod(0o755)
    net = Tenant(Neutron(args.neutron, Keystone(args.keystone, "nova", password)), args.network)
    host = Host(net, workdir, args.known_hosts, args.control_plane)
    stop = threading.Event()
    try:
        net.up()
        args.known_hosts.write_text("")
        args.ready.write_text(
            json.dumps(
                {
                    "client_netns": tenant.CLIENT_NS,
                    "admin_netns": tenant.ADMIN_NS,
                    "client": net.client[0],
                    "client_external": net.client_external[0],
                    "admin": net.admin.address,
                }
            )
        )
        say(f"tenant network {args.network} up: client {net.client[0]}, admin {net.admin.address}")
        threading.Thread(target=host.refresh_forever, args=(stop,), daemon=True).start()
        for line in sys.stdin:
            if line.strip():
                host.handle(json.loads(line))
        return 0
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        host.shutdown()
        net.down()
        topology.cleanup(tenant.PREFIX, tenant.WORKDIR_PREFIX)
        args.known_hosts.unlink(missing_ok=True)
        host._release_lab_lock()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
