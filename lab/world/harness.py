"""The lab as one context manager: build everything from the JSON, tear it all down on exit.

Each node is a machine of its own (`lab.world.engine`): network, mount and pid namespaces, a disk, and a
Docker engine. The lab hands each node its user_data as the cloud would: the real cloud-init
writes the files and runs the runcmd entries verbatim, so the synthesized `docker run` lines
start stand-in images (`lab.world.images`) tagged with the config's image references.

Entry points for drills and tools, beside `Lab(doc, variant)`, `wait_steady`, `holders`,
`nodes[...]`, `topology.cut` and `client.between`:
- `lab.operator(config)`: `python -m ops` from the admin namespace over SSH (`lab.world.admin`,
  `lab.world.sshd`), against `lab.stack_json` (the JSON as the lab runs it) or `lab.write_stack(doc)`;
- `lab.nodes[n].sshd.stop()` / `start()`: the node's OpenSSH server;
- `lab.nodes[n].crash(container)`: SIGKILL the container's main process; Docker's restart
  policy brings it back (`docker kill` would not: Docker counts it as a stop by hand);
- `lab.nodes[n].stop_container(c)` / `start_container(c)`: `docker stop` / `docker start`;
- `lab.nodes[n].docker(...)`: the docker CLI against that node's engine;
- `lab.nodes[n].kill_apiserver()` / `drain_apiserver()`: the stand-in apiserver gone at once
  (SIGKILL) or shut down gracefully (SIGTERM: /readyz fails, it serves on for its shutdown delay);
  `apiserver.start()` brings it back;
- `lab.power_off(n)` / `lab.power_on(n)` / `lab.reboot(n)`: a hard reset of the node (every
  process at once, the VIP with them) and a boot in order: network, engine, containers by their
  restart policy, apiserver.

Teardown runs whatever happened (a failed build, a failed drill, Ctrl-C), and a lock file keeps
two labs (tests and a benchmark, say) from sharing the `kha-` names at the same time.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import yaml

from cluster.plan import HAPROXY_FD_HEADROOM, KUBEADM_CONFIG, takeover_max_s
from lab.world import cloudinit, images, kubeadm, sshd, steady, synth, topology
from lab.world.admin import AdminNetwork, Operator
from lab.world.apiserver import PORT as APISERVER_PORT
from lab.world.apiserver import make_certificate
from lab.world.client import Recorder, cert_id
from lab.world.daemons import NodeDaemons, PlacedFile, content_of
from lab.world.engine import Engine, join_cgroup, make_cgroup, remove_cgroups, weighs_cpu
from lab.world.kubelet import Kubelet, StaticPodHandle
from lab.world.node import LabNode
from lab.world.procs import Proc
from userdata import configs
from userdata.render import (
    CONTAINER_FILES,
    HAPROXY_CFG,
    HAPROXY_CONTAINER,
    KEEPALIVED_CONF,
    KEEPALIVED_CONTAINER,
    NETWORK_SCRIPT,
)

ROOT = Path(__file__).resolve().parent.parent.parent
LOCK = Path("/run/kha-lab.lock")
VRRP_CALM_MARGIN_S = 0.2  # for the scheduler: keepalived's timers run late on a loaded machine
# The CPU weight of each node, and of the client's machine (see lab.world.engine): eight sessions'
# worth (a session or a container weighs 1024), so that a build or a test run elsewhere on this
# machine, `nice` or not, cannot hold up a node's keepalived for the 0.3 s that moves the VIP.
NODE_CPU_SHARES = 8192
# keepalived, haproxy and the apiserver above the rest of their node (lab/world/engine.py says why).
DAEMON_CPU_SHARES = 8192
APISERVER_CGROUP = "apiserver"
CLIENT_CGROUP = topology.PREFIX + "client"
# What serves the API behind haproxy: the Python stand-in (lab.world.apiserver), or the real etcd and
# kube-apiserver that the real kubeadm sets up from each node's kubeadm.yaml (lab.world.kubeadm).
STAND_IN = "stand-in"
KUBEADM = "kubeadm"
CONTROL_PLANES = (STAND_IN, KUBEADM)
# The real tools, as `make setup` builds them (kube/).
TOOLS = ROOT / ".tools" / "bin"


def synthesize(root: Path = ROOT, fresh: bool = False) -> Path:
    """The synthesized JSON, running `main.py` first when there is none, or always when `fresh`
    (as `make synth` does: cdktf.out is written anew, so no stack of an earlier config or code
    is measured)."""
    if not fresh:
        try:
            return synth.find_synth_json(root)
        except synth.SynthError:
            pass
    shutil.rmtree(root / "cdktf.out", ignore_errors=True)
    python = root / ".venv" / "bin" / "python"
    subprocess.run([str(python if python.exists() else sys.executable), "main.py"], cwd=root, check=True)
    return synth.find_synth_json(root)


def synthesize_config(config: dict, outdir: Path, root: Path = ROOT) -> tuple[Path, Path]:
    """Write `config` as YAML into `outdir` and synthesize it there (`main.py`, as `make synth`
    does): returns the YAML and the one cdk.tf.json."""
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    python = root / ".venv" / "bin" / "python"
    env = {
        **os.environ,
        "CONFIG": str(path),
        "CDKTF_OUTDIR": str(outdir / "cdktf.out"),
        "PATH": f"{root / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        [str(python if python.exists() else sys.executable), "main.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise synth.SynthError(f"synthesizing {path} failed: {done.stderr.strip()[-500:]}")
    [json_path] = sorted((outdir / "cdktf.out").glob("stacks/*/cdk.tf.json"))
    return path, json_path


#: host path (as written by cloud-init) -> path the container reads
CONTAINER_PATHS: dict[str, str] = {f.host_path: f.container_path for f in CONTAINER_FILES}


def _placed_files(node: synth.Node) -> list[PlacedFile]:
    """The node's user_data files that a container reads, at the path the container reads them."""
    return [dataclasses.replace(f, path=CONTAINER_PATHS[f.path]) for f in node.files if f.path in CONTAINER_PATHS]


def hard_open_files() -> int:
    """This machine's hard open-files limit (what runc can give a container at most)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else hard


def fit_to_machine(doc: dict) -> tuple[dict, list[str]]:
    """The JSON as the lab runs it, and what was substituted (see synth.fit_open_files)."""
    return synth.fit_open_files(doc, hard_open_files(), HAPROXY_FD_HEADROOM, HAPROXY_CONTAINER)


def fit_user_data(user_data: str) -> tuple[str, list[str]]:
    """One node's user_data as the cloud's hypervisor runs it (`lab.hypervisor`), and what was
    substituted: the open-files fit of `fit_to_machine`, node by node."""
    return synth.fit_user_data(user_data, hard_open_files(), HAPROXY_FD_HEADROOM, HAPROXY_CONTAINER)


def cpu_note() -> str:
    """How the lab stands in for the VMs' own CPUs, announced with the substitutions."""
    if weighs_cpu():
        return (
            f"CPU: each node (and the client) in a cgroup of its own weighing cpu.shares {NODE_CPU_SHARES}, "
            "for a VM's own CPUs (the nodes still share this machine's cores with one another); inside a node, "
            f"its haproxy and keepalived containers and its apiserver weigh {DAEMON_CPU_SHARES}, the rest 1024"
        )
    return (
        "CPU: no cgroup v1 cpu hierarchy here: the nodes share this machine's CPUs with everything else, "
        "session by session"
    )


def acquire_lock(timeout: float, abort: Callable[[], bool] = lambda: False):
    """The machine-wide lab lock (an open file; closing it releases the lock); None if `abort()`
    turned true while waiting."""
    lock_file = open(LOCK, "w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock_file
        except BlockingIOError:
            if time.monotonic() > deadline or abort():
                lock_file.close()
                if abort():
                    return None
                raise TimeoutError(f"another lab holds {LOCK}") from None
            time.sleep(0.5)


def _announce(line: str) -> None:
    print(f"lab: {line}", file=sys.stderr, flush=True)


def _gateway(files: list[PlacedFile], node: str) -> str | None:
    """The subnet gateway as the nodes' network check pings it: its first argument in keepalived.conf."""
    conf = content_of(files, KEEPALIVED_CONF.container_path, node)
    targets = configs.script_arguments(conf, NETWORK_SCRIPT.container_path)
    return targets[0] if targets else None


def make_node(
    name: str,
    ns: str,
    address: str,
    nodedir: Path,
    host_key: Path,
    certificate: tuple[Path, Path],
    control_plane: str = STAND_IN,
) -> LabNode:
    """One node in namespace `ns` (which exists), not yet booted: its engine, daemon watchers,
    sshd and what serves the API (the stand-in apiserver on `address`, or the kubelet stand-in)."""
    daemons_weight = {c: DAEMON_CPU_SHARES for c in (HAPROXY_CONTAINER, KEEPALIVED_CONTAINER)}
    engine = Engine(
        name,
        ns,
        nodedir,
        cgroup=ns,
        cpu_shares=NODE_CPU_SHARES if weighs_cpu() else None,
        daemon_shares=daemons_weight,
    )
    engine.make_cgroups((APISERVER_CGROUP,))
    engine.weigh_part(APISERVER_CGROUP, DAEMON_CPU_SHARES)
    daemons = NodeDaemons(name, engine, HAPROXY_CONTAINER, KEEPALIVED_CONTAINER)
    unhealthy = nodedir / "apiserver-unhealthy"
    ssh_server = sshd.Sshd(engine, address, host_key)
    if control_plane == KUBEADM:
        kubelet = Kubelet(engine, name, TOOLS, TOOLS / "kubectl", partial(engine.enter, part=APISERVER_CGROUP))
        handle = StaticPodHandle(kubelet, "kube-apiserver")
        return LabNode(name, ns, address, engine, daemons, handle, unhealthy, ssh_server, kubelet)
    cert, key = certificate
    argv = [sys.executable, "-m", "lab.world.apiserver", "--bind", address, "--port", str(APISERVER_PORT)]
    argv += ["--node", name, "--cert", str(cert), "--key", str(key), "--unhealthy-file", str(unhealthy)]
    apiserver = Proc(
        f"{name}-apiserver",
        engine.joined(APISERVER_CGROUP, topology.in_ns(ns, argv)),
        nodedir / "apiserver.log",
        cwd=ROOT,
    )
    return LabNode(name, ns, address, engine, daemons, apiserver, unhealthy, ssh_server)


def first_boot(node: LabNode, image_tarball: Path, user_data: str, public_key: str) -> None:
    """Boot the node's engine, "pull" the images, run its user_data with cloud-init, start sshd
    with `public_key` authorized for the image's default user."""
    node.engine.boot(node.daemons.on_event)
    node.engine.docker("load", "--input", str(image_tarball))
    cloudinit.run_userdata(node.engine, user_data)
    sshd.provision(node.engine, public_key)
    node.sshd.start()


T = TypeVar("T")


def _built(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"the lab's {what} exists only inside `with Lab(...)`")
    return value


class Lab:
    """`with Lab(doc) as lab:` builds the stack in namespaces and starts everything."""

    def __init__(
        self,
        doc: dict,
        variant: str = "ours",
        keep: bool = False,
        lock_timeout: float = 600,
        edit: Callable[[dict], dict] | None = None,
        control_plane: str = STAND_IN,
        kubeadm_up: bool = True,
    ):
        """`variant` names what the nodes run, made by `edit` from the JSON once the lab's own
        substitutions are made (`lab.scenarios.variants.lab_for`); "ours" is the JSON as it is.
        `control_plane` says what serves the API (CONTROL_PLANES)."""
        if control_plane not in CONTROL_PLANES:
            raise ValueError(f"control_plane {control_plane!r}: one of {', '.join(CONTROL_PLANES)}")
        self.control_plane = control_plane
        self.kubeadm_up = kubeadm_up  # False: the kubelet stand-ins are there, kubeadm has not run (the caller runs it)
        if (variant == "ours") != (edit is None):
            raise ValueError(f"variant {variant!r}: an edit is needed for any variant but 'ours', and only then")
        # The gateway as our network check names it, for either variant (the lab's own topology).
        ours = synth.parse(doc).nodes[0]
        self.gateway = _gateway(_placed_files(ours), ours.name)
        # The substitutions the lab makes, announced at start: see synth.fit_open_files and cpu_note.
        doc, self.substitutions = fit_to_machine(doc)
        self.substitutions.append(cpu_note())
        if edit is not None:
            doc = edit(doc)
        self.doc = doc
        self.stack = synth.parse(doc)
        self.images = self.stack.images()
        self.variant = variant
        self.keep = keep
        self.lock_timeout = lock_timeout
        # Runs once the lab is down and before its lock is released (another lab cannot have started).
        self.before_release: Callable[[], None] | None = None
        first = self.stack.nodes[0]
        self.files = {n.name: _placed_files(n) for n in self.stack.nodes}
        haproxy_cfg = content_of(self.files[first.name], HAPROXY_CFG.container_path, first.name)
        self.frontend_port = configs.frontend_port(haproxy_cfg)
        # haproxy's health and stats frontend, on the loopback address only
        [self.health_port] = configs.ports_bound_on(haproxy_cfg, "127.0.0.1")
        interfaces: dict[str, str] = {}
        # A backup acts on its own once it has missed its master's adverts: until that long (and a
        # margin) after keepalived's last state or priority change, the VIP may still move by itself.
        self.vrrp_calm: dict[str, float] = {}
        self.priority: dict[str, int] = {}
        for n in self.stack.nodes:
            inst = configs.vrrp_instance(content_of(self.files[n.name], KEEPALIVED_CONF.container_path, n.name))
            interfaces[n.name] = inst.interface
            self.vrrp_calm[n.name] = takeover_max_s(inst.advert_int) + VRRP_CALM_MARGIN_S
            self.priority[n.name] = inst.priority
        self.gateway = self.gateway or self.stack.default_gateway()
        self.topology = topology.Topology(self.stack, interfaces, self.gateway)
        # The administrators' network, inside the security group's SSH rule (access.admin_cidrs).
        ssh_from = self.stack.ingress_prefixes(sshd.PORT)
        self.admin = AdminNetwork(ssh_from[0], topology.GATEWAY_NS, self.gateway) if ssh_from else None
        self._keys: sshd.Keys | None = None
        self._stack_json: Path | None = None
        self.nodes: dict[str, LabNode] = {}
        self._client: Recorder | None = None
        self._workdir: Path | None = None
        self._lock_file = None

    # What exists only inside `with Lab(...)`: asking for it outside is a bug in the caller.
    @property
    def workdir(self) -> Path:
        return _built(self._workdir, "workdir")

    @property
    def client(self) -> Recorder:
        return _built(self._client, "client")

    @property
    def keys(self) -> sshd.Keys:
        return _built(self._keys, "ssh keys")

    @property
    def stack_json(self) -> Path:
        return _built(self._stack_json, "stack JSON")

    # --- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # SIGTERM would end Python without its finally blocks: the engines would outlive the lab.
            signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
        self._acquire()
        try:
            topology.cleanup()
            self._workdir = Path(tempfile.mkdtemp(prefix=topology.WORKDIR_PREFIX, dir=topology.WORKDIR_PARENT))
            self._workdir.chmod(0o755)
            for line in self.substitutions:
                _announce(f"substitution: {line}")
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._client:
                self._client.stop()
            remove_cgroups(CLIENT_CGROUP)
            for node in self.nodes.values():
                node.tear_down()
            if self.admin:
                self.admin.down()
            self.topology.down()
            if self._workdir and not self.keep:
                shutil.rmtree(self._workdir, ignore_errors=True)
        finally:
            try:
                if self.before_release:  # e.g. the soak's look for leftovers, before another lab may start
                    self.before_release()
            finally:
                self._release()

    def _acquire(self) -> None:
        self._lock_file = acquire_lock(self.lock_timeout)

    def _release(self) -> None:
        if self._lock_file:
            self._lock_file.close()
            self._lock_file = None

    def _build(self) -> None:
        self.topology.up()
        if self.admin:
            self.admin.up()
        self.image_tarball = images.ensure(self.images, self.workdir)
        self._keys = sshd.make_keys(self.workdir / "ssh", {n.name: n.address for n in self.stack.nodes})
        self._stack_json = self.write_stack(self.doc, "lab")
        cert, key = self._certificate()
        for n in self.stack.nodes:
            ep = self.topology.nodes[n.name]
            nodedir = self.workdir / "nodes" / n.name
            nodedir.mkdir(parents=True)
            self.nodes[n.name] = make_node(
                n.name, ep.ns, n.address, nodedir, self.keys.host_keys[n.name], (cert, key), self.control_plane
            )
        if self.control_plane == STAND_IN:
            for node in self.nodes.values():
                node.apiserver.start()
        self._each_node(self._first_boot)
        if self.control_plane == KUBEADM and self.kubeadm_up:
            self._kubeadm_up()
        if weighs_cpu():
            make_cgroup(CLIENT_CGROUP, NODE_CPU_SHARES)
        self._client = Recorder(
            self.client_argv_prefix(), self.stack.vip, self.frontend_port, self.workdir / "client.log", ROOT
        )
        if self.control_plane == KUBEADM and self.kubeadm_up:
            for name, node in self.nodes.items():
                der = ssl.PEM_cert_to_DER_cert(kubeadm.node_file(node.engine, kubeadm.APISERVER_CERT).read_text())
                self.client.identities[cert_id(der)] = name
        self.client.start()

    def _kubeadm_up(self) -> None:
        """`kubeadm init` on the node whose kubeadm.yaml says InitConfiguration, then each other
        node's join.sh in turn (README, "kubeadm"); each node's kubelet stand-in runs what it writes."""
        first = self.init_node
        started = time.monotonic()
        kubelet = self.nodes[first].kubelet
        assert kubelet is not None
        kubelet.start()
        secrets = kubeadm.init(self.nodes[first].engine, TOOLS)
        _announce(f"kubeadm init on {first}: {time.monotonic() - started:.1f} s")
        for name, node in self.nodes.items():
            if name == first:
                continue
            assert node.kubelet is not None
            node.kubelet.start()
            joined = time.monotonic()
            kubeadm.join(node.engine, TOOLS, secrets)
            _announce(f"kubeadm join on {name}: {time.monotonic() - joined:.1f} s")
        shutil.copy(kubeadm.node_file(self.nodes[first].engine, kubeadm.ADMIN_CONF), self.kubeconfig)
        _announce(f"control plane up in {time.monotonic() - started:.1f} s; kubeconfig {self.kubeconfig}")

    def client_argv_prefix(self) -> list[str]:
        """What runs a command on the client's machine: its namespace, and its cgroup where the lab weighs CPU."""
        prefix = topology.in_ns(topology.CLIENT_NS, [])
        return join_cgroup(CLIENT_CGROUP, prefix) if weighs_cpu() else prefix

    @property
    def init_node(self) -> str:
        """The node whose kubeadm configuration is the InitConfiguration."""
        for n in self.stack.nodes:
            if "kind: InitConfiguration" in n.file(KUBEADM_CONFIG).content:
                return n.name
        raise RuntimeError("no node's kubeadm.yaml holds an InitConfiguration")

    @property
    def kubeconfig(self) -> Path:
        """kubeadm's admin.conf, from the first node (its server is the VIP: controlPlaneEndpoint)."""
        return self.workdir / "admin.conf"

    def _first_boot(self, node: LabNode) -> None:
        first_boot(node, self.image_tarball, self._user_data(node.name), self.keys.public_key)

    def _user_data(self, name: str) -> str:
        return self.stack.nodes[list(self.nodes).index(name)].user_data

    def _each_node(self, step, names: list[str] | None = None) -> None:
        """Run `step(node)` for the nodes in parallel; raise the first failure."""
        errors: list[BaseException] = []

        def one(node: LabNode) -> None:
            try:
                step(node)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=one, args=(self.nodes[n],)) for n in (names or list(self.nodes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _certificate(self) -> tuple[Path, Path]:
        """A certificate for the stand-in apiservers, valid for the VIP and every node address."""
        return make_certificate(self.workdir, [self.stack.vip, *(n.address for n in self.stack.nodes)])

    # --- power ------------------------------------------------------------------------------
    def power_off(self, name: str) -> None:
        self.nodes[name].power_off(self.topology)

    def power_on(self, name: str) -> None:
        self.nodes[name].power_on(self.topology)

    def reboot(self, name: str, down: float = 1.0) -> None:
        self.power_off(name)
        time.sleep(down)
        self.power_on(name)

    # --- the operator's tool -------------------------------------------------------------------
    def write_stack(self, doc: dict, name: str) -> Path:
        """A JSON for the operator's tool, with the lab's substitution applied (the nodes run that)."""
        path = self.workdir / "stacks" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(doc if doc is self.doc else fit_to_machine(doc)[0], indent=2))
        return path

    def operator(self, config: Path) -> Operator:
        """`python -m ops` in the admin namespace; `config` is the YAML the lab's JSON was synthesized from."""
        if self.admin is None or self._keys is None:
            raise RuntimeError(
                "the JSON has no ingress rule for SSH (access.admin_cidrs): no admin can reach the nodes"
            )
        return Operator(self.keys, config, self.workdir / "ops.log")

    # --- observation ------------------------------------------------------------------------
    def holders(self) -> list[str]:
        return self.topology.holders()

    def unsteady_reason(self, quiet: float = 1.0) -> str | None:
        """Why the lab is not in its steady state, or None (`lab.world.steady`)."""
        return steady.unsteady_reason(self.holders(), self.nodes, self.vrrp_calm, self.client, quiet)

    def vrrp_unsettled(self) -> str | None:
        """Why keepalived may still move the VIP by itself, or None."""
        return steady.vrrp_unsettled(self.nodes, self.vrrp_calm)

    def wait_steady(self, timeout: float = 30, quiet: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        time.sleep(quiet)
        while (reason := self.unsteady_reason(quiet)) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lab not steady after {timeout} s: {reason} (logs in {self.workdir})")
            time.sleep(0.1)

    def describe(self) -> str:
        holders = self.holders()
        lines = [
            f"variant {self.variant}; VIP {self.stack.vip}:{self.frontend_port}; client {self.topology.client.address}"
            + (f"; admin {self.admin.address} via the gateway {self.gateway}" if self.admin else "")
        ]
        for node in self.nodes.values():
            mark = "  <- VIP holder" if node.name in holders else ""
            lines.append(
                f"  {node.name:<16} {node.address:<15} netns {node.ns:<20} keepalived {node.daemons.vrrp_state}{mark}"
            )
        return "\n".join(lines)
