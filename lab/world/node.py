"""One lab node: its namespace, engine, containers, stand-in apiserver and sshd, the faults that
can be done to them, and its power (a hard reset and a boot in order).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lab.world.daemons import NodeDaemons
from lab.world.engine import Engine
from lab.world.kubelet import Kubelet, StaticPodHandle
from lab.world.procs import Proc
from lab.world.sshd import Sshd


class Wire(Protocol):
    """A node's link to its network, as its power needs it (`topology.Topology`, `tenant.Tenant`)."""

    def cut(self, node: str, cut: bool = True) -> None: ...

    def reset_addresses(self, node: str) -> None: ...


@dataclass
class LabNode:
    """One node in the lab: its namespace, engine, containers and stand-in apiserver."""

    name: str
    ns: str
    address: str
    engine: Engine
    daemons: NodeDaemons
    apiserver: Proc | StaticPodHandle
    unhealthy_file: Path
    sshd: Sshd
    # The real control plane's kubelet stand-in (`lab.world.kubelet`); None with the stand-in apiserver.
    kubelet: Kubelet | None = None

    def set_healthy(self, healthy: bool) -> None:
        """Make the apiserver's /readyz and /healthz answer 200 (healthy) or 500 (the stand-in only:
        a real kube-apiserver is made unhealthy by its etcd going away)."""
        if self.kubelet is not None:
            raise RuntimeError(f"{self.name}: set_healthy is the stand-in apiserver's; stop etcd instead")
        if healthy:
            self.unhealthy_file.unlink(missing_ok=True)
        else:
            self.unhealthy_file.touch()

    def kill_apiserver(self) -> None:
        """The apiserver gone at once (SIGKILL), as in a crash or a power cut: nothing drains."""
        self.apiserver.stop(sig=signal.SIGKILL)

    def drain_apiserver(self) -> None:
        """SIGTERM, as kubelet stops kube-apiserver: the stand-in's graceful shutdown (`lab.world.apiserver`).
        Returns at once; the process exits after its shutdown delay."""
        self.apiserver.kill(signal.SIGTERM)

    def apiserver_said(self, prefix: str, t0: float) -> float | None:
        """When the apiserver first printed a line starting with `prefix` at or after t0 (the
        monotonic stamp its log line got when it was read), or None."""
        if not self.apiserver.log.exists():
            return None
        for raw in self.apiserver.log.read_text(errors="replace").splitlines():
            stamp, _, line = raw.partition(" ")
            if line.startswith(prefix) and float(stamp) >= t0:
                return float(stamp)
        return None

    def docker(self, *args: str, check: bool = True) -> str:
        return self.engine.docker(*args, check=check)

    def crash(self, container: str) -> None:
        """SIGKILL the container's main process: a crash, which Docker's restart policy answers."""
        self.engine.crash(container)

    def stop_container(self, container: str) -> None:
        """`docker stop`: the image's stop signal; stays stopped (a stop by hand)."""
        self.engine.docker("stop", container)

    def start_container(self, container: str) -> None:
        self.engine.docker("start", container)

    # --- power ------------------------------------------------------------------------------
    def power_off(self, topology: Wire) -> None:
        """A hard reset: the node's port goes silent, every process of the node dies at once, and
        what lived in its memory (the VIP on its interface) is gone."""
        topology.cut(self.name)
        self.sshd.stop()
        if self.kubelet is not None:
            self.kubelet.pause()
        self.engine.power_off()
        self.daemons.engine_gone()
        self.stop_control_plane()
        topology.reset_addresses(self.name)

    def tear_down(self) -> None:
        """The node's end, with its lab's or its server's: daemons, sshd, engine, control plane, and
        last its cgroups (the apiserver is in the node's cgroup too)."""
        self.daemons.stop()
        self.sshd.stop()
        if self.kubelet is not None:
            self.kubelet.pause()
        self.engine.power_off()
        self.stop_control_plane()
        self.engine.remove_cgroups()

    def stop_control_plane(self) -> None:
        """What serves the API on this node is gone (with the node: its kubelet stand-in stops too)."""
        if self.kubelet is not None:
            self.kubelet.stop()
        else:
            self.kill_apiserver()

    def power_on(self, topology: Wire) -> None:
        """Boot in order: the network, the engine (which starts the containers by their restart
        policy; cloud-init's runcmd is per instance and does not run again), the apiserver."""
        topology.cut(self.name, False)
        self.engine.boot(self.daemons.on_event)
        self.daemons.sync()
        self.sshd.start()
        if self.kubelet is not None:
            self.kubelet.start()  # kubelet starts the static pods from their manifests, as at boot
        else:
            self.apiserver.start()
        # cloud-init's bootcmd is not run again: what it set lives in the node's network
        # namespace, which the lab keeps across reboots (a real VM's kernel forgets it, and
        # cloud-init runs bootcmd at every boot).
