"""The lab's stand-in for kubelet on a control-plane node: it runs the static pods kubeadm writes.

kubeadm writes etcd's and kube-apiserver's static pod manifests under /etc/kubernetes/manifests on
the node's disk; kubelet would run each as a container and mirror it into the API. Here each one
runs as a process of the node (its network, mount and pid namespaces: it dies with the node), from
the very command and arguments of its manifest, with the binary `make setup` built for the
manifest's image; it is started again when it exits, and mirrored into kube-system as kubelet
mirrors a static pod (kubeadm's join finds the etcd members from those mirror pods' annotations).

Where it departs from kubelet, and why (docs/lab.md lists these with the rest of the lab's):
- Only the components in `RUNS` run: etcd, kube-apiserver and kube-controller-manager (its
  bootstrap signer signs the cluster-info ConfigMap that `kubeadm join` discovers the cluster by).
  The scheduler schedules nothing here (there are no nodes to schedule on): its manifest stays unrun.
- No container: the image's binary is the one built from the same release (the image's tag must
  be the pinned version); hostPath volumes are the node's own paths (kubeadm mounts each at the same
  path), so the process sees what the container would.
- Probes are not run; a process that exits is started again after RESTART_DELAY_S (kubelet backs off
  10 s, 20 s, ... up to 5 min): the lab's drills time the fault, not the back-off.
- Mirror pods are created with the node's admin.conf (kubelet uses its own node credentials, which
  need the kubelet TLS bootstrap the lab skips).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from cluster.kubernetes import ETCD_VERSION, KUBERNETES_VERSION
from lab.world.engine import NODE_PATH, Engine, EngineError
from lab.world.procs import Proc

MANIFESTS = "/etc/kubernetes/manifests"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
# The components the lab runs, and the image tag each must carry (the release `make setup` built).
RUNS = {
    "etcd": f"{ETCD_VERSION}-",
    "kube-apiserver": f"v{KUBERNETES_VERSION}",
    "kube-controller-manager": f"v{KUBERNETES_VERSION}",
}
POLL_S = 0.2
DEFAULT_GRACE_S = 30  # a pod's terminationGracePeriodSeconds when its spec gives none
RESTART_DELAY_S = 1.0
MIRROR_RETRY_S = 1.0


class KubeletError(RuntimeError):
    """A manifest the lab cannot run as kubelet would; the message names it."""


@dataclass(frozen=True)
class StaticPod:
    name: str  # the pod's name in the manifest (etcd, kube-apiserver)
    argv: tuple[str, ...]  # command and args, as the container would run them
    image: str
    digest: str  # of the manifest: kubelet recreates the pod when it changes
    manifest: dict


def read_manifest(path: Path, bindir: Path) -> StaticPod | None:
    """The static pod in `path` as the lab runs it, or None for a component the lab does not run."""
    manifest = yaml.safe_load(path.read_text())
    name = manifest["metadata"]["name"]
    if name not in RUNS:
        return None
    (container,) = manifest["spec"]["containers"]
    image = container["image"]
    tag = image.rpartition(":")[2]
    if not tag.startswith(RUNS[name]):
        raise KubeletError(f"{path}: image {image}: the lab runs {name} {RUNS[name].rstrip('-')} only (make setup)")
    for mount in container.get("volumeMounts", []):
        volume = next(v for v in manifest["spec"].get("volumes", []) if v["name"] == mount["name"])
        if volume.get("hostPath", {}).get("path") != mount["mountPath"]:
            raise KubeletError(f"{path}: volume {mount['name']} is not mounted at its own path: the lab cannot run it")
    command = [*container.get("command", []), *container.get("args", [])]
    binary = bindir / Path(command[0]).name
    if not binary.exists():
        raise KubeletError(f"{path}: no {binary}: `make setup` builds {command[0]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return StaticPod(name, (str(binary), *command[1:]), image, digest, manifest)


def mirror_pod(pod: StaticPod, node: str) -> dict:
    """The pod kubelet would create in the API for the static pod (its `kubernetes.io/config.*` annotations)."""
    manifest = json.loads(json.dumps(pod.manifest))
    meta = manifest["metadata"]
    meta["name"] = f"{pod.name}-{node}"
    meta["namespace"] = meta.get("namespace", "kube-system")
    meta.setdefault("annotations", {}).update(
        {
            "kubernetes.io/config.mirror": pod.digest,
            "kubernetes.io/config.hash": pod.digest,
            "kubernetes.io/config.source": "file",
        }
    )
    meta.pop("creationTimestamp", None)
    manifest["spec"]["nodeName"] = node
    manifest.pop("status", None)
    return manifest


class Kubelet:
    """Watches the node's manifests; runs, restarts and mirrors its static pods. Start after boot."""

    def __init__(self, engine: Engine, node: str, bindir: Path, kubectl: Path, enter: Callable[[list[str]], list[str]]):
        self.engine = engine
        self.node = node
        self.bindir = bindir
        self.kubectl = kubectl
        self.enter = enter  # argv -> argv run inside the node, in the cgroup static pods run in
        self.manifests = engine.nodedir / "disk" / "etc" / "kubernetes" / "manifests"
        self.pods: dict[str, StaticPod] = {}
        self.procs: dict[str, Proc] = {}
        self.mirrored: set[tuple[str, str]] = set()  # (pod, manifest digest)
        self._exited: dict[str, float] = {}  # pod -> when the lab saw its process gone
        self.errors: list[str] = []
        self.starts: dict[str, int] = {}
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{self.node}", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Stop watching: nothing is started again from now on (the node is about to lose power)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def stop(self) -> None:
        """Stop watching and end the static pods (they die with the node's pid namespace anyway)."""
        self.pause()
        with self._lock:
            for proc in self.procs.values():
                proc.stop(grace=0.5, sig=signal.SIGKILL)
            self.procs.clear()
            self.mirrored.clear()
            self._held.clear()
            self._exited.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except (KubeletError, EngineError) as err:
                if str(err) not in self.errors:
                    self.errors.append(str(err))
            self._stop.wait(POLL_S)

    def _sync(self) -> None:
        wanted: dict[str, StaticPod] = {}
        if self.manifests.is_dir():
            for path in sorted(self.manifests.glob("*.yaml")):
                pod = read_manifest(path, self.bindir)
                if pod is not None:
                    wanted[pod.name] = pod
        with self._lock:
            for name, pod in wanted.items():
                proc = self.procs.get(name)
                changed = name in self.pods and self.pods[name].digest != pod.digest
                if proc is not None and changed:
                    proc.stop(grace=30)  # kubelet's default grace period for the old pod
                    proc = None
                self.pods[name] = pod
                if name in self._held:
                    continue
                if proc is not None and not proc.running:
                    gone = self._exited.setdefault(name, time.monotonic())
                    if time.monotonic() - gone < RESTART_DELAY_S:
                        continue
                    proc.stop(grace=0)  # reap it
                    proc = None
                if proc is None:
                    self._exited.pop(name, None)
                    self._run(pod)
                if (name, pod.digest) not in self.mirrored:
                    threading.Thread(target=self._mirror, args=(pod,), daemon=True).start()
                    self.mirrored.add((name, pod.digest))

    def _run(self, pod: StaticPod) -> None:
        log = self.engine.nodedir / f"{pod.name}.log"
        argv = self.enter(["env", "-i", f"PATH={NODE_PATH}", *pod.argv])
        proc = Proc(f"{self.node}-{pod.name}", argv, log)
        proc.start()
        self.procs[pod.name] = proc
        self.starts[pod.name] = self.starts.get(pod.name, 0) + 1

    def _mirror(self, pod: StaticPod) -> None:
        """Create the mirror pod once the API answers (kubelet retries too); replace an older one."""
        body = json.dumps(mirror_pod(pod, self.node))
        kubectl = [str(self.kubectl), "--kubeconfig", ADMIN_CONF, "--request-timeout=5s"]
        while not self._stop.is_set():
            done = subprocess.run(
                self.engine.enter([*kubectl, "replace", "--force", "-f", "-"]),
                input=body,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode == 0:
                return
            self._stop.wait(MIRROR_RETRY_S)

    # --- faults ----------------------------------------------------------------------------
    def proc(self, name: str) -> Proc:
        with self._lock:
            if name not in self.procs:
                raise KubeletError(f"{self.node}: no {name} running")
            return self.procs[name]

    def signal(self, name: str, sig: int) -> None:
        """Signal a static pod's process (SIGTERM: kubelet stopping it; SIGKILL: a crash). It is
        started again once it has exited, as kubelet restarts a static pod's container."""
        proc = self.proc(name)
        pid = _pod_pid(proc)
        if pid is None:
            proc.kill(sig)
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:  # kubelet's stop: SIGKILL once the pod's grace period is over
            grace = self.pods[name].manifest["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
            timer = threading.Timer(grace, self._kill_if_alive, args=(pid, self.pods[name].argv[0]))
            timer.daemon = True
            timer.start()

    @staticmethod
    def _kill_if_alive(pid: int, binary: str) -> None:
        """SIGKILL `pid` if it still runs `binary` (a pid that was reused since is left alone)."""
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() == binary:
                os.kill(pid, signal.SIGKILL)
        except (OSError, UnicodeDecodeError):
            pass

    def end(self, name: str, grace: float, sig: int) -> None:
        """`sig` to the pod's process group, SIGKILL after `grace`, and reap it (`Proc.stop`)."""
        with self._lock:
            proc = self.procs.get(name)
        if proc is not None:
            proc.stop(grace=grace, sig=sig)

    def hold(self, name: str, held: bool = True) -> None:
        """Keep a component stopped (held) or let it run again (kubelet restarting it)."""
        with self._lock:
            (self._held.add if held else self._held.discard)(name)

    def running(self, name: str) -> bool:
        with self._lock:
            proc = self.procs.get(name)
            return proc is not None and proc.running


def _pod_pid(proc: Proc) -> int | None:
    """The static pod's own process: nsenter's child (nsenter forks into the node's pid namespace
    and dies of a SIGTERM itself, so signalling its process group would end the wrong process first)."""
    if proc.popen is None:
        return None
    try:
        children = Path(f"/proc/{proc.popen.pid}/task/{proc.popen.pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


class StaticPodHandle:
    """One static pod as the lab's drills handle a process (`Proc`'s start/stop/kill/running/log):
    stop holds it down, start lets the kubelet stand-in run it again, kill signals it (SIGTERM:
    kubelet stopping the pod, SIGKILL: a crash) and the kubelet stand-in restarts it after it exits."""

    def __init__(self, kubelet: Kubelet, pod: str):
        self.kubelet = kubelet
        self.pod = pod
        self.name = f"{kubelet.node}-{pod}"
        self.log = kubelet.engine.nodedir / f"{pod}.log"

    @property
    def running(self) -> bool:
        return self.kubelet.running(self.pod)

    def start(self) -> StaticPodHandle:
        self.kubelet.hold(self.pod, False)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.kubelet.running(self.pod):
            self.kubelet.signal(self.pod, sig)

    def stop(self, grace: float = 2.0, sig: int = signal.SIGTERM) -> None:
        self.kubelet.hold(self.pod)
        self.kubelet.end(self.pod, grace, sig)
