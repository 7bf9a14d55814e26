"""Start Keystone, Neutron and the compute emulation on loopback, seed them, stop them without a trace.

Runs inside the cloud's virtualenv (`python -m cloud`). Everything it makes lives in one temporary
folder (configs, sqlite databases, fernet keys, logs) plus the two clouds.yaml files under
.stamps/cloud; `stop()` ends every process it started and removes all of it.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloud import compute, paths

REGION = "RegionOne"
ZONE = compute.ZONE
# What config/example.yaml names, plus a shared network owned by another project.
SEED = {
    "project": "demo",
    "user": "demo",
    "other_project": "kha-other",
    "network": "demo-net",
    "subnet": "demo-subnet",
    "cidr": "192.0.2.0/24",
    "gateway": "192.0.2.1",
    "router": "demo-router",
    "external": "public",
    "external_subnet": "public-subnet",
    "external_cidr": "203.0.113.0/24",
    "shared_network": "shared-net",
    "shared_subnet": "shared-subnet",
    "shared_cidr": "198.51.100.0/24",
    "image": "ubuntu-24.04",
    "flavor": "m1.large",
    "key_pair": "demo-admin",
}

KEYSTONE_CONF = """\
[database]
connection = sqlite:///{tmp}/keystone.db
[token]
provider = fernet
expiration = 14400
[fernet_tokens]
key_repository = {tmp}/fernet-keys
[fernet_receipts]
key_repository = {tmp}/fernet-keys
[credential]
key_repository = {tmp}/credential-keys
[identity]
password_hash_rounds = 4
"""

NEUTRON_CONF = """\
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = fake://
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
state_path = {tmp}/neutron
api_paste_config = {venv}/etc/neutron/api-paste.ini
[database]
connection = sqlite:///{tmp}/neutron.db
[keystone_authtoken]
www_authenticate_uri = {keystone}/v3
auth_url = {keystone}/v3
auth_type = password
username = neutron
password = {password}
project_name = service
user_domain_id = default
project_domain_id = default
[oslo_concurrency]
lock_path = {tmp}/neutron/lock
[oslo_messaging_notifications]
driver = noop
"""

ML2_CONF = """\
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers =
extension_drivers = port_security
[ml2_type_flat]
flat_networks = {external}
[ml2_type_vxlan]
vni_ranges = 1:1000
"""


CONTROL_PLANES = ("stand-in", "kubeadm")  # as lab.world.harness names them


class CloudError(Exception):
    """A start-up step failed; the message names the step and ends with the service's log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: SIGTERM when the launcher dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Launcher:
    log: Callable[[str], None] = lambda line: print(line, flush=True)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kha-cloud-")))
    passwords: dict[str, str] = field(
        default_factory=lambda: {u: secrets.token_urlsafe(18) for u in ("admin", "neutron", "nova", "demo")}
    )
    procs: list[subprocess.Popen] = field(default_factory=list)
    state: compute.State = field(default_factory=compute.State)
    # Why booted servers will not run here (None: they run, each as a lab node: `lab.hypervisor`).
    not_running: str | None = field(default_factory=lambda: servers_cannot_run())
    agent: subprocess.Popen | None = None
    # What serves the API on a booted node: the lab's stand-in apiserver, or the kubelet stand-in that
    # runs what kubeadm writes (the operator runs kubeadm over SSH, as on a cloud).
    control_plane: str = "stand-in"
    namespaces: dict[str, Any] = field(default_factory=dict)  # the agent's: client_netns, admin_netns, ...
    _stop_compute: Callable[[], None] | None = None
    _t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.keystone = Service("keystone", free_port())
        self.neutron = Service("neutron", free_port())
        self.compute = Service("compute", free_port())
        self.image = Service("image", free_port())

    # processes
    def step(self, what: str) -> None:
        """One line per start-up step with the seconds since the start: where the time goes."""
        self.log(f"  {time.monotonic() - self._t0:5.1f} s  {what}")

    def _run(self, step: str, *argv: str, env: dict[str, str] | None = None) -> None:
        logfile = self.tmp / f"{step.split()[0]}-setup.log"
        with logfile.open("a") as out:
            rc = subprocess.call(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=paths.ROOT,
                env={**os.environ, **(env or {})},
                preexec_fn=_die_with_parent,
            )
        if rc != 0:
            raise CloudError(f"{step} failed (exit {rc}):\n{self._tail(logfile)}")
        self.step(step)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        out = (self.tmp / f"{name}.log").open("a")
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=paths.ROOT,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def _uwsgi(self, svc: Service, module: str, threads: int, env: dict[str, str]) -> None:
        svc.proc = self._spawn(
            svc.name,
            [
                str(paths.VENV / "bin" / "uwsgi"),
                "--http-socket",
                f"127.0.0.1:{svc.port}",
                "--module",
                module,
                "--home",
                str(paths.VENV),
                "--master",
                "--lazy-apps",
                "--need-app",
                "--processes",
                "1",
                "--threads",
                str(threads),
                "--die-on-term",
                "--no-orphans",
                "--add-header",
                "Connection: close",
                "--buffer-size",
                "65535",
                "--disable-logging",
            ],
            env,
        )

    def _tail(self, logfile: Path, lines: int = 25) -> str:
        try:
            return "\n".join(logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait(self, svc: Service, path: str = "/", timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if svc.proc is not None and svc.proc.poll() is not None:
                raise CloudError(
                    f"{svc.name} exited ({svc.proc.returncode}):\n{self._tail(self.tmp / f'{svc.name}.log')}"
                )
            try:
                urllib.request.urlopen(svc.url + path, timeout=5).close()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        raise CloudError(
            f"{svc.name} did not answer on {svc.url} within {timeout:.0f} s:\n"
            f"{self._tail(self.tmp / f'{svc.name}.log')}"
        )

    # start-up
    def start(self) -> None:
        ks_dir, nt_dir = self.tmp / "keystone", self.tmp / "neutron"
        for d in (ks_dir, nt_dir, nt_dir / "lock"):
            d.mkdir(parents=True)
        (ks_dir / "keystone.conf").write_text(KEYSTONE_CONF.format(tmp=self.tmp))
        (nt_dir / "neutron.conf").write_text(
            NEUTRON_CONF.format(
                tmp=self.tmp, venv=paths.VENV, keystone=self.keystone.url, password=self.passwords["neutron"]
            )
        )
        (nt_dir / "ml2_conf.ini").write_text(ML2_CONF.format(external=SEED["external"]))
        nt_args = ["--config-file", str(nt_dir / "neutron.conf"), "--config-file", str(nt_dir / "ml2_conf.ini")]

        # Neutron's tables are built while Keystone starts (sqlite: from the models, see neutron_db.py).
        neutron_db = self._spawn(
            "neutron-db", [str(paths.PYTHON), "-m", "cloud.neutron_db", *nt_args], {"PYTHONPATH": str(paths.ROOT)}
        )
        self._run(
            "keystone set-up (db_sync, fernet_setup, credential_setup, bootstrap)",
            str(paths.PYTHON),
            "-m",
            "cloud.keystone_init",
            str(ks_dir / "keystone.conf"),
            str(os.getuid()),
            str(os.getgid()),
            self.passwords["admin"],
            f"{self.keystone.url}/v3",
            REGION,
            env={"PYTHONPATH": str(paths.ROOT)},
        )
        self._uwsgi(self.keystone, "keystone.wsgi.api:application", 4, {"OS_KEYSTONE_CONFIG_DIR": str(ks_dir)})
        if neutron_db.wait() != 0:
            raise CloudError(f"building Neutron's database failed:\n{self._tail(self.tmp / 'neutron-db.log')}")
        self.procs.remove(neutron_db)
        self.step("neutron database (models, stamp heads)")
        # sqlite takes one writer: Neutron gets one thread ("database is locked" otherwise).
        self._uwsgi(
            self.neutron,
            "neutron.wsgi.api:application",
            1,
            {"OS_NEUTRON_CONFIG_DIR": str(nt_dir), "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini"},
        )
        self._wait(self.keystone, "/v3")
        self.step("keystone answers")
        from cloud import seed  # openstacksdk: only in the cloud's virtualenv

        ids = seed.identity(self)
        self.step("identity seeded: projects, users, catalog")
        keystone = compute.Keystone(self.keystone.url, "nova", self.passwords["nova"])
        hypervisor = None if self.not_running else compute.AgentHypervisor(self._cast)
        self._stop_compute = compute.start(
            self.state,
            keystone,
            compute.Neutron(self.neutron.url, keystone),
            self.compute.port,
            self.image.port,
            hypervisor,
        )
        self._wait(self.neutron, "/")
        self.step("neutron answers")
        seed.network(self, ids)
        self.step("networks seeded: public, shared-net, demo-net behind demo-router")
        if self.not_running is None:
            self._start_agent()
            self.step(f"hypervisor: {SEED['network']} in namespaces, client and admin namespaces")
        seed.compute(self, ids)
        self.write_clouds_yaml()
        self.write_cloud_json()

    # the hypervisor: booted servers become lab nodes
    def _start_agent(self) -> None:
        ready = self.tmp / "hypervisor-ready.json"
        out = (self.tmp / "hypervisor.log").open("a")
        paths.OUT.mkdir(parents=True, exist_ok=True)
        self.agent = subprocess.Popen(
            [
                str(paths.PROJECT_PYTHON),
                "-m",
                "lab.hypervisor",
                "--keystone",
                self.keystone.url,
                "--neutron",
                self.neutron.url,
                "--network",
                SEED["network"],
                "--ready",
                str(ready),
                "--known-hosts",
                str(paths.KNOWN_HOSTS),
                "--control-plane",
                self.control_plane,
            ],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=paths.ROOT,
            env={**os.environ, "PYTHONPATH": str(paths.ROOT), "KHA_CLOUD_NOVA_PASSWORD": self.passwords["nova"]},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        self.procs.append(self.agent)
        deadline = time.time() + 180
        while not ready.exists():
            if self.agent.poll() is not None or time.time() > deadline:
                raise CloudError(f"the hypervisor did not start:\n{self._tail(self.tmp / 'hypervisor.log')}")
            time.sleep(0.2)
        self.namespaces = json.loads(ready.read_text())

    def _cast(self, line: str) -> None:
        if self.agent is not None and self.agent.stdin is not None and self.agent.poll() is None:
            self.agent.stdin.write(line)
            self.agent.stdin.flush()

    def _stop_agent(self) -> None:
        """EOF on its stdin: the agent removes every node and namespace, then exits."""
        if self.agent is None:
            return
        if self.agent.stdin is not None:
            try:
                self.agent.stdin.close()
            except OSError:
                pass
        try:
            self.agent.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.agent.terminate()
            self.agent.wait(timeout=60)
        self.procs.remove(self.agent)
        self.agent = None

    def write_cloud_json(self) -> None:
        doc = {
            "clouds_yaml": str(paths.CLOUDS_YAML),
            "cloud": paths.CLOUD,
            "client_netns": self.namespaces.get("client_netns"),
            "admin_netns": self.namespaces.get("admin_netns"),
            "ssh_key": str(paths.SSH_KEY),
        }
        paths.CLOUD_JSON.write_text(json.dumps(doc, indent=2) + "\n")

    def clouds(self, admin: bool) -> dict[str, Any]:
        user, project = ("admin", "admin") if admin else (SEED["user"], SEED["project"])
        return {
            "clouds": {
                paths.ADMIN_CLOUD if admin else paths.CLOUD: {
                    "auth": {
                        "auth_url": f"{self.keystone.url}/v3",
                        "username": user,
                        "password": self.passwords[user],
                        "project_name": project,
                        "user_domain_name": "Default",
                        "project_domain_name": "Default",
                    },
                    "region_name": REGION,
                    "interface": "public",
                    "identity_api_version": 3,
                }
            }
        }

    def write_clouds_yaml(self) -> None:
        paths.OUT.mkdir(parents=True, exist_ok=True)
        for path, admin in ((paths.CLOUDS_YAML, False), (paths.ADMIN_YAML, True)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                yaml.safe_dump(self.clouds(admin), out, sort_keys=False)

    # shutdown
    def stop(self) -> None:
        if self._stop_compute is not None:
            self._stop_compute()
            self._stop_compute = None
        self._stop_agent()
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the whole group: uwsgi's workers too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self.procs.clear()
        for path in (paths.CLOUDS_YAML, paths.ADMIN_YAML, paths.CLOUD_JSON, paths.SSH_KEY, paths.KNOWN_HOSTS):
            path.unlink(missing_ok=True)
        if paths.OUT.is_dir() and not any(paths.OUT.iterdir()):
            paths.OUT.rmdir()
        shutil.rmtree(self.tmp, ignore_errors=True)


def servers_cannot_run() -> str | None:
    """Why booted servers cannot become lab nodes here, or None."""
    if os.geteuid() != 0:
        return "not root, so no network namespaces"
    if not paths.PROJECT_PYTHON.exists():
        return f"no project virtualenv at {paths.PROJECT_PYTHON.parent.parent} (`make setup-python`)"
    for command in ("dockerd", "cloud-init", "nft", "sshd"):
        if shutil.which(command) is None and not Path(f"/usr/sbin/{command}").exists():
            return f"{command} is not installed (`make setup-system`)"
    with open(paths.HYPERVISOR_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"another cloud on this machine runs its servers (it holds {paths.HYPERVISOR_LOCK})"
    return None


def _program(proc: subprocess.Popen) -> str:
    args = proc.args
    return str(args[0] if isinstance(args, (list, tuple)) else args)


class Stopped(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud", description="Keystone, Neutron and compute on loopback.")
    parser.add_argument(
        "--control-plane",
        choices=CONTROL_PLANES,
        default=CONTROL_PLANES[0],
        help="what serves the API on a booted node: the stand-in apiserver, or kubeadm's (run over SSH)",
    )
    args = parser.parse_args(argv)

    def on_signal(signum: int, _frame: Any) -> None:
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    launcher = Launcher(control_plane=args.control_plane)
    try:
        launcher.start()
        for svc in (launcher.keystone, launcher.neutron, launcher.compute, launcher.image):
            print(f"{svc.name}: {svc.url}", flush=True)
        print(f"clouds.yaml: {paths.CLOUDS_YAML} (cloud {paths.CLOUD}); admin: {paths.ADMIN_YAML}", flush=True)
        print(f"run folder: {launcher.tmp}", flush=True)
        if launcher.not_running:
            print(f"{paths.NOT_RUNNING}: {launcher.not_running}; the API serves as before", flush=True)
        else:
            ns = launcher.namespaces
            print(
                f"client namespace: {ns['client_netns']} ({ns['client']}; {ns['client_external']} outside)", flush=True
            )
            print(f"admin namespace: {ns['admin_netns']} ({ns['admin']}, beyond the router)", flush=True)
        print(f"cloud.json: {paths.CLOUD_JSON}", flush=True)
        print(f"started in {time.monotonic() - started:.1f} s", flush=True)
        print(paths.READY, flush=True)
        while True:  # until a signal, or until a service dies
            for proc in launcher.procs:
                if proc.poll() is not None:
                    print(f"error: a service exited ({_program(proc)} {proc.returncode}); stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except Stopped as why:
        print(f"stopping ({why})", flush=True)
        return 0
    except CloudError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        launcher.stop()
        print("cloud stopped", flush=True)
