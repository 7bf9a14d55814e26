"""The lab as one context manager: build everything from the JSON, tear it all down on exit.

Teardown runs whatever happened (a failed build, a failed drill, Ctrl-C), and a lock file keeps
two labs (tests and a benchmark, say) from sharing the `kha-` names at the same time.
"""

from __future__ import annotations

import dataclasses
import fcntl
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab import configs, contract, seed, synth, topology
from lab.apiserver import PORT as APISERVER_PORT
from lab.client import Recorder
from lab.daemons import NodeDaemons, PlacedFile, content_of
from lab.procs import Proc

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path("/run/kha-lab.lock")
VARIANTS = ("ours", "seed")


def synthesize(root: Path = ROOT) -> Path:
    """The synthesized JSON, running `main.py` first when there is none."""
    try:
        return synth.find_synth_json(root)
    except synth.SynthError:
        python = root / ".venv" / "bin" / "python"
        subprocess.run([str(python if python.exists() else sys.executable), "main.py"], cwd=root, check=True)
        return synth.find_synth_json(root)


@dataclass
class LabNode:
    """One node in the lab: its namespace, daemons and stand-in apiserver."""

    name: str
    ns: str
    address: str
    daemons: NodeDaemons
    apiserver: Proc
    unhealthy_file: Path

    def set_healthy(self, healthy: bool) -> None:
        """Make the apiserver's /healthz answer 200 (healthy) or 500."""
        if healthy:
            self.unhealthy_file.unlink(missing_ok=True)
        else:
            self.unhealthy_file.touch()


def _placed_files(node: synth.Node) -> list[PlacedFile]:
    """The node's user_data files that a container reads, at the path the container reads them."""
    return [
        dataclasses.replace(f, path=contract.CONTAINER_PATHS[f.path])
        for f in node.files
        if f.path in contract.CONTAINER_PATHS
    ]


def _seed_files(files: list[PlacedFile], first: bool, port: int, node: str) -> list[PlacedFile]:
    """Our files with keepalived.conf replaced by the seed's settings and the seed's check added."""
    conf = seed.keepalived_conf(configs.vrrp_instance(content_of(files, contract.KEEPALIVED_CONFIG, node)), first)
    kept = [f for f in files if f.path != contract.KEEPALIVED_CONFIG]
    return [*kept, PlacedFile(contract.KEEPALIVED_CONFIG, conf, "root:root", "0600"),
            PlacedFile(seed.CHECK_SCRIPT, seed.check_script(port), "root:root", "0755")]  # fmt: skip


def _gateway(files: list[PlacedFile], node: str) -> str | None:
    """The subnet gateway as the nodes' network check pings it: its first argument in keepalived.conf."""
    conf = content_of(files, contract.KEEPALIVED_CONFIG, node)
    targets = configs.script_arguments(conf, contract.NETWORK_CHECK)
    return targets[0] if targets else None


class Lab:
    """`with Lab(doc) as lab:` builds the stack in namespaces and starts everything."""

    def __init__(self, doc: dict, variant: str = "ours", keep: bool = False, lock_timeout: float = 600):
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: expected one of {VARIANTS}")
        self.stack = synth.parse(doc)
        self.variant = variant
        self.keep = keep
        self.lock_timeout = lock_timeout
        first = self.stack.nodes[0]
        self.files = {n.name: _placed_files(n) for n in self.stack.nodes}
        self.gateway = _gateway(self.files[first.name], first.name)
        self.frontend_port = configs.frontend_port(content_of(self.files[first.name], contract.HAPROXY_CONFIG, first.name))
        interfaces: dict[str, str] = {}
        # A backup acts on its own once it has missed three adverts (plus skew): until that long
        # after keepalived's last state or priority change, the VIP may still move by itself.
        self.vrrp_calm: dict[str, float] = {}
        self.priority: dict[str, int] = {}
        for n in self.stack.nodes:
            if variant == "seed":
                self.files[n.name] = _seed_files(self.files[n.name], n is first, self.frontend_port, n.name)
            inst = configs.vrrp_instance(content_of(self.files[n.name], contract.KEEPALIVED_CONFIG, n.name))
            interfaces[n.name] = inst.interface
            self.vrrp_calm[n.name] = 4 * inst.advert_int + 0.2
            self.priority[n.name] = inst.priority
        self.topology = topology.Topology(self.stack, interfaces, self.gateway)
        self.nodes: dict[str, LabNode] = {}
        self.client: Recorder | None = None
        self.workdir: Path | None = None
        self._lock_file = None

    # --- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self._acquire()
        try:
            topology.cleanup()
            self.workdir = Path(tempfile.mkdtemp(prefix=topology.WORKDIR_PREFIX, dir=topology.WORKDIR_PARENT))
            self.workdir.chmod(0o755)
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.client:
                self.client.stop()
            for node in self.nodes.values():
                node.daemons.stop()
                node.apiserver.stop()
            self.topology.down()
            if self.workdir and not self.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            self._release()

    def _acquire(self) -> None:
        self._lock_file = open(LOCK, "w")
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another lab holds {LOCK}") from None
                time.sleep(0.5)

    def _release(self) -> None:
        if self._lock_file:
            self._lock_file.close()
            self._lock_file = None

    def _build(self) -> None:
        self.topology.up()
        cert, key = self._certificate()
        for n in self.stack.nodes:
            ep = self.topology.nodes[n.name]
            nodedir = self.workdir / "nodes" / n.name
            nodedir.mkdir(parents=True)
            daemons = NodeDaemons(n.name, ep.ns, nodedir, self.files[n.name],
                                  contract.HAPROXY_CONFIG, contract.KEEPALIVED_CONFIG)  # fmt: skip
            daemons.place_files()
            unhealthy = nodedir / "apiserver-unhealthy"
            apiserver = Proc(f"{n.name}-apiserver", topology.in_ns(ep.ns, [
                sys.executable, "-m", "lab.apiserver", "--bind", n.address, "--port", str(APISERVER_PORT),
                "--node", n.name, "--cert", str(cert), "--key", str(key), "--unhealthy-file", str(unhealthy),
            ]), nodedir / "apiserver.log", cwd=ROOT)  # fmt: skip
            self.nodes[n.name] = LabNode(n.name, ep.ns, n.address, daemons, apiserver, unhealthy)
        for node in self.nodes.values():
            node.apiserver.start()
        for node in self.nodes.values():
            node.daemons.start_haproxy()
        for node in self.nodes.values():
            node.daemons.start_keepalived()
        self.client = Recorder(topology.in_ns(topology.CLIENT_NS, []), self.stack.vip, self.frontend_port,
                               self.workdir / "client.log", ROOT)  # fmt: skip
        self.client.start()

    def _certificate(self) -> tuple[Path, Path]:
        """A self-signed EC certificate for the stand-in apiservers (cheap handshakes)."""
        cert, key = self.workdir / "apiserver.crt", self.workdir / "apiserver.key"
        sans = ",".join(f"IP:{a}" for a in [self.stack.vip, *(n.address for n in self.stack.nodes)])
        topology.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-days", "2", "-subj", "/CN=kube-apiserver", "-addext", f"subjectAltName={sans}",
                      "-keyout", str(key), "-out", str(cert)])  # fmt: skip
        return cert, key

    # --- observation ------------------------------------------------------------------------
    def holders(self) -> list[str]:
        return self.topology.holders()

    def unsteady_reason(self, quiet: float = 1.0) -> str | None:
        """Why the lab is not in its steady state, or None: exactly one VIP holder, every
        process up, every haproxy seeing every backend up, every keepalived MASTER or BACKUP,
        no keepalived state or priority change for as long as a backup needs to act on it, and
        the last `quiet` seconds of client attempts all served, by every node."""
        holders = self.holders()
        if len(holders) != 1:
            return f"VIP holders {holders}"
        for node in self.nodes.values():
            d = node.daemons
            for proc in (d.haproxy, d.keepalived, node.apiserver):
                if not proc.running:
                    return f"{proc.name} not running"
            if d.servers_down:
                return f"{node.name}: haproxy sees {sorted(d.servers_down)} down"
            if d.vrrp_state not in ("MASTER", "BACKUP"):
                return f"{node.name}: keepalived {d.vrrp_state}"
        if reason := self.vrrp_unsettled():
            return reason
        now = time.monotonic()
        recent = [a for a in self.client.between(now - quiet) if a.end <= now]
        if any(not a.ok for a in recent):
            return f"client failures in the last {quiet} s"
        answered = {a.node for a in recent}
        if answered != set(self.nodes):
            return f"client answered by {sorted(n for n in answered if n)} only"
        return None

    def vrrp_unsettled(self) -> str | None:
        """Why keepalived may still move the VIP by itself, or None."""
        now = time.monotonic()
        for name, calm in self.vrrp_calm.items():
            if now - self.nodes[name].daemons.vrrp_changed < calm:
                return f"{name}: keepalived changed state or priority less than {calm:.1f} s ago"
        return None

    def wait_steady(self, timeout: float = 30, quiet: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        time.sleep(quiet)
        while (reason := self.unsteady_reason(quiet)) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lab not steady after {timeout} s: {reason} (logs in {self.workdir})")
            time.sleep(0.1)

    def describe(self) -> str:
        holders = self.holders()
        lines = [f"variant {self.variant}; VIP {self.stack.vip}:{self.frontend_port}; client {self.topology.client.address}"]
        for node in self.nodes.values():
            mark = "  <- VIP holder" if node.name in holders else ""
            lines.append(f"  {node.name:<16} {node.address:<15} netns {node.ns:<20} keepalived {node.daemons.vrrp_state}{mark}")
        return "\n".join(lines)

