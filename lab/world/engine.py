"""One node's machine: its own mount and pid namespaces inside its network namespace, its disk,
and a Docker engine (Debian's docker.io) that runs there, as on the VM.

The node's "operating system" is a process tree whose root (tini, pid 1 of the node's pid
namespace) holds a private mount namespace where /etc, /var/lib, /var/log and /home are overlays
whose upper layers are the node's disk (kept across reboots), /run is a fresh tmpfs at each boot
and /usr/local is empty, as on a fresh VM. Whatever the userdata writes lands on that disk, and
the engine, started in the same namespaces, resolves `--volume /etc/kubeadm-ha/...` there: the
synthesized lines run unchanged, per node. The engine also listens on the default socket,
/run/docker.sock, so a `docker` run inside the node (over ssh, say) talks to the node's engine.

Killing pid 1 kills every process of the node at once (engine, containerd, shims, containers):
a hard reset. `boot()` again starts a new process tree on the same disk; the engine then starts
the containers by their restart policy, as after a reboot.

dockerd is entered with `nsenter --net=/run/netns/<ns>` (`ip netns exec` remounts /sys and
dockerd then fails with "Devices cgroup isn't mounted"). Its data-root lives on the node's disk;
exec-root, socket and pid file under the node's run directory, emptied at each boot.
Containers' cgroups go under /kha-<node> so that a hard kill leaves nothing in Docker's own.

A VM has CPUs of its own; the lab's nodes share this machine's with one another and with whatever
else runs here. With the scheduler's autogroups (`kernel.sched_autogroup_enabled`), `nice` weighs
only inside a session: every session (a build, a test run, each of the lab's own daemons) counts
as much as another, and a node's containers as one. So every process of a node runs in the node's
cgroup, /kha-<node> in the cpu hierarchy, whose weight (`cpu_shares`) stands for the VM's own
CPUs: the node gets the machine whenever it needs it, and what it leaves idle goes to the rest.
Inside, as on a VM with systemd: the node's own processes (init, engine, sshd, what runs in the
node) in `system`, its apiserver in `apiserver` (a static pod on a real node), each container in
one of its own (Docker's --cgroup-parent), all of equal weight, except what serves: kubeadm wants
2 CPUs on a control-plane node, so there keepalived, haproxy and the apiserver find a free core
while the node's engine runs a `docker run --rm` (the operator's validation); here all nodes
validate at once on two shared cores, so the lab weighs the containers named in `daemon_shares`
(at each start: a restart gets a fresh cgroup of the default weight) and the apiserver's cgroup
above the rest of their node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.world.procs import Proc

# /usr/local is left out, and empty inside the node: a fresh VM has nothing there (this machine
# has a newer docker CLI there, which sudo's secure_path would find first).
NODE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
OVERLAID = ("/etc", "/var/lib", "/var/log", "/home")
DEFAULT_SOCKET = "/run/docker.sock"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1: `cpu` weighs (cpu.shares, 1024 for a session or a container), `cpuacct` counts.
CPU_HIERARCHIES = ("cpu", "cpuacct")
SYSTEM_CGROUP = "system"
START_TIMEOUT = 30.0


class EngineError(RuntimeError):
    """A node's engine did not do what the lab asked."""


@dataclass(frozen=True)
class ContainerEvent:
    t: float  # monotonic, when the lab read it
    container: str
    action: str  # start, die, ...
    exit_code: int | None


def _mount_script(nodedir: Path) -> str:
    disk = nodedir / "disk"
    steps = ["set -e"]
    for target in OVERLAID:
        name = target.strip("/").replace("/", "-")
        upper, work = disk / name, disk / f".work-{name}"
        steps.append(f"mkdir -p {upper} {work}")
        steps.append(f"mount -t overlay kha-{name} -o lowerdir={target},upperdir={upper},workdir={work} {target}")
    steps += [
        "mount -t tmpfs -o mode=0755 kha-run /run",
        "mkdir -p /run/lock",
        "mount -t tmpfs -o mode=0755,ro kha-usr-local /usr/local",
        f"touch {nodedir / 'run' / 'booted'}",
        "exec tini -s -- sleep infinity",
    ]
    return "\n".join(steps)


class Engine:
    """The node's machine and its Docker engine: boot, power off, run the docker CLI, crash a container."""

    def __init__(
        self,
        name: str,
        ns: str,
        nodedir: Path,
        cgroup: str,
        cpu_shares: int | None = None,
        daemon_shares: dict[str, int] | None = None,
    ):
        self.name = name
        self.ns = ns
        self.nodedir = nodedir
        self.cgroup = cgroup
        self.cpu_shares = cpu_shares
        self.daemon_shares = dict(daemon_shares or {}) if cpu_shares else {}
        self.rundir = nodedir / "run"
        self.data_root = nodedir / "disk" / "docker"
        self.socket = self.rundir / "docker.sock"
        self.boots = 0
        self.init: Proc | None = None
        self.dockerd: Proc | None = None
        self.events: Proc | None = None
        self._event_hooks: list[Callable[[ContainerEvent], None]] = []

    # --- environment -----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {"PATH": NODE_PATH, "HOME": "/root", "DOCKER_HOST": f"unix://{self.socket}", "LANG": "C.UTF-8"}

    @property
    def init_pid(self) -> int:
        """pid (on this host) of the node's pid 1."""
        if self.init is None or self.init.popen is None:
            raise EngineError(f"{self.name}: the node is not booted")
        children = Path(f"/proc/{self.init.popen.pid}/task/{self.init.popen.pid}/children").read_text().split()
        if not children:
            raise EngineError(f"{self.name}: the node's init is gone")
        return int(children[0])

    def enter(self, argv: list[str], part: str = SYSTEM_CGROUP) -> list[str]:
        """argv run inside the node: its network, mount and pid namespaces, and its cgroup `part`."""
        return self.joined(part, ["nsenter", f"--target={self.init_pid}", "--net", "--mount", "--pid", "--", *argv])

    def joined(self, part: str, argv: list[str]) -> list[str]:
        """argv run in the node's cgroup `part` (see the module's docstring): a shell joins it and
        execs argv, so every child starts inside. Unchanged without a node weight."""
        return join_cgroup(f"{self.cgroup}/{part}", argv) if self.cpu_shares else argv

    def make_cgroups(self, parts: tuple[str, ...]) -> None:
        """The node's cgroup with its weight, and `parts` under it (Docker makes the containers')."""
        if self.cpu_shares:
            make_cgroup(self.cgroup, self.cpu_shares, parts)

    def weigh_part(self, part: str, shares: int) -> None:
        """Give the node's cgroup `part` (made by make_cgroups) a weight of its own."""
        if self.cpu_shares:
            for top in cpu_hierarchies():
                knob = top / self.cgroup / part / "cpu.shares"
                if knob.exists():  # the cpu hierarchy's, not cpuacct's
                    knob.write_text(str(shares))

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A command inside the node, with the node's environment (PATH, DOCKER_HOST)."""
        done = subprocess.run(
            self.enter(["env", "-i", *(f"{k}={v}" for k, v in self.env.items()), *argv]),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise EngineError(f"{self.name}: {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """The docker CLI against this node's engine (run on the host: no need to enter the node)."""
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env}
        )
        if check and done.returncode != 0:
            raise EngineError(f"{self.name}: docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    # --- life cycle ------------------------------------------------------------------------
    def boot(self, on_event: Callable[[ContainerEvent], None] | None = None) -> None:
        """Start the node's process tree and its engine; the engine starts containers by policy."""
        if on_event is not None and on_event not in self._event_hooks:
            self._event_hooks.append(on_event)
        shutil.rmtree(self.rundir, ignore_errors=True)
        self.rundir.mkdir(parents=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.boots += 1
        self.make_cgroups((SYSTEM_CGROUP,))
        self.init = Proc(
            f"{self.name}-init",
            self.joined(
                SYSTEM_CGROUP,
                [
                    "nsenter",
                    f"--net=/run/netns/{self.ns}",
                    "unshare",
                    "--mount",
                    "--pid",
                    "--fork",
                    "--propagation",
                    "private",
                    "--mount-proc",
                    "sh",
                    "-c",
                    _mount_script(self.nodedir),
                ],
            ),
            self.nodedir / "init.log",
        )
        self.init.start()
        self._wait(lambda: (self.rundir / "booted").exists(), "the node's mounts")
        self.dockerd = Proc(
            f"{self.name}-dockerd",
            self.enter(
                [
                    "env",
                    "-i",
                    f"PATH={NODE_PATH}",
                    "dockerd",
                    "--data-root",
                    str(self.data_root),
                    "--exec-root",
                    str(self.rundir / "docker"),
                    "-H",
                    f"unix://{self.socket}",
                    "-H",
                    f"unix://{DEFAULT_SOCKET}",
                    "--pidfile",
                    str(self.rundir / "docker.pid"),
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--cgroup-parent",
                    f"/{self.cgroup}",
                ]
            ),
            self.nodedir / "dockerd.log",
        )
        self.dockerd.start()
        self._wait(self.answers, "dockerd to answer")
        self.events = Proc(
            f"{self.name}-events",
            ["docker", "events", "--filter", "type=container", "--format", "{{json .}}"],
            self.nodedir / "events.log",
            self._on_event_line,
            env={**os.environ, **self.env},
        )
        self.events.start()

    def answers(self) -> bool:
        done = subprocess.run(["docker", "version"], capture_output=True, env={**os.environ, **self.env}, timeout=10)
        return done.returncode == 0

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise EngineError(f"{self.name}: timed out after {timeout} s waiting for {what} (see {self.nodedir})")
            if self.init is not None and not self.init.running:
                raise EngineError(
                    f"{self.name}: the node's init exited while waiting for {what} (see {self.nodedir}/init.log)"
                )
            time.sleep(0.05)

    def _on_event_line(self, t: float, line: str) -> None:
        if not line.startswith("{"):
            return
        d = json.loads(line)
        attrs = d.get("Actor", {}).get("Attributes", {})
        code = attrs.get("exitCode")
        event = ContainerEvent(
            t,
            attrs.get("name", ""),
            d.get("status") or d.get("Action", ""),
            int(code) if code not in (None, "") else None,
        )
        if event.action == "start" and event.container in self.daemon_shares:
            self._weigh(str(d.get("id", "")), self.daemon_shares[event.container])
        for hook in self._event_hooks:
            hook(event)

    def _weigh(self, container_id: str, shares: int) -> None:
        for top in cpu_hierarchies():
            knob = top / self.cgroup / container_id / "cpu.shares"
            try:
                if knob.exists():  # the cpu hierarchy's, not cpuacct's
                    knob.write_text(str(shares))
            except OSError:
                pass  # gone again (a crash loop): its next start weighs it anew

    def container_shares(self, container: str) -> int | None:
        """The cpu.shares of a running container's cgroup (None where the lab does not weigh)."""
        container_id = self.docker("inspect", "--format", "{{.Id}}", container).strip()
        for top in cpu_hierarchies():
            knob = top / self.cgroup / container_id / "cpu.shares"
            if knob.exists():
                return int(knob.read_text())
        return None

    @property
    def up(self) -> bool:
        return self.init is not None and self.init.running

    def power_off(self) -> None:
        """Kill the node's pid 1: every process of the node dies at once (a hard reset)."""
        if self.init is None or self.init.popen is None:
            return
        try:
            os.kill(self.init_pid, signal.SIGKILL)
        except (EngineError, FileNotFoundError, ProcessLookupError):
            pass
        for proc in (self.dockerd, self.events, self.init):
            if proc is not None:
                proc.stop(grace=5)
        self.init = self.dockerd = self.events = None

    def crash(self, container: str) -> int:
        """SIGKILL a container's main process, as a crash would: unlike `docker kill`, which
        marks the container stopped by hand, this leaves Docker's restart policy in charge.
        Returns the pid killed (in the node's pid namespace)."""
        pid = int(self.docker("inspect", "--format", "{{.State.Pid}}", container).strip() or 0)
        if pid <= 0:
            raise EngineError(f"{self.name}: container {container} is not running")
        self.run(["kill", "-KILL", str(pid)])
        return pid

    def remove_cgroups(self) -> None:
        remove_cgroups(self.cgroup)


def remove_cgroups(name: str) -> list[str]:
    """rmdir the (empty, all processes dead) cgroups under /<name> in every hierarchy."""
    removed = []
    for top in CGROUP_ROOT.glob(f"*/{name}"):
        for d in sorted(top.rglob("*"), key=lambda p: -len(p.parts)) + [top]:
            if d.is_dir():
                try:
                    d.rmdir()
                    removed.append(str(d))
                except OSError:
                    pass
    return removed


def cpu_hierarchies() -> list[Path]:
    """This machine's cgroup v1 cpu and cpuacct hierarchies (one if they are mounted together)."""
    found: list[Path] = []
    for name in CPU_HIERARCHIES:
        d = (CGROUP_ROOT / name).resolve()
        if (d / "cgroup.procs").exists() and d not in found:
            found.append(d)
    return found


def weighs_cpu() -> bool:
    return any((d / "cpu.shares").exists() for d in cpu_hierarchies())


def make_cgroup(name: str, cpu_shares: int, parts: tuple[str, ...] = ()) -> None:
    """/<name> in the cpu hierarchies with `cpu_shares`, and its `parts` (of the default weight)."""
    for top in cpu_hierarchies():
        for d in (top / name, *(top / name / p for p in parts)):
            d.mkdir(exist_ok=True)
        if (top / name / "cpu.shares").exists():
            (top / name / "cpu.shares").write_text(str(cpu_shares))


def join_cgroup(path: str, argv: list[str]) -> list[str]:
    """argv run as a member of the cgroup /<path> in the cpu hierarchies (which must exist)."""
    joins = [f"echo $$ > {top / path / 'cgroup.procs'}" for top in cpu_hierarchies()]
    return ["sh", "-c", " && ".join([*joins, 'exec "$@"']), "kha-cgroup", *argv] if joins else argv
