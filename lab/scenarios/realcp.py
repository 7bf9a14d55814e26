"""Drills with the real control plane behind the VIP, measured by the real client (kha-probe).

The lab runs etcd, kube-apiserver and kube-controller-manager as kubeadm set them up
(`Lab(control_plane=KUBEADM)`); kha-probe talks to the VIP through client-go while each drill makes
its fault. The drills of the stand-in lab that apply as they are (haproxy, keepalived, the holder
cut off, its power cut) run unchanged; the faults only a real control plane has are here:
kube-apiserver stopped gracefully (SIGTERM: kubelet stopping the static pod) or killed, an etcd
member killed, a whole non-holder node powered off. For each, beside the stand-in's figures from
the Python client: the probe's failed requests and outage, each watcher's gap (from the fault to
its first event of a write started after the fault), and at the end the acknowledged writes lost.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.plan import STATS_URI
from lab.scenarios import drills
from lab.scenarios.drills import DrillResult, _settle, _wait_for, drill_result, one_holder
from lab.world import probe as p
from lab.world import synth, topology
from lab.world.harness import TOOLS, Lab, synthesize_config

RESTART_MAX = 90.0  # a killed static pod: kubelet's restart, then kube-apiserver's own start


def _kubelet(lab: Lab, node: str):
    kubelet = lab.nodes[node].kubelet
    if kubelet is None:
        raise RuntimeError("these drills need the real control plane: Lab(control_plane=KUBEADM)")
    return kubelet


def _static_pod_fault(lab: Lab, name: str, pod: str, sig: int) -> DrillResult:
    """Signal a static pod of the VIP holder; the kubelet stand-in starts it again once it exits.
    Watched until it runs again and the lab is steady (its apiserver back in haproxy's rotation)."""
    lab.wait_steady()
    holder = one_holder(lab)
    kubelet = _kubelet(lab, holder)
    starts = kubelet.starts.get(pod, 0)
    t0 = time.monotonic()
    kubelet.signal(pod, sig)
    restarted = _wait_for(lambda: kubelet.starts.get(pod, 0) > starts and kubelet.running(pod), t0 + RESTART_MAX)
    t1 = _settle(lab, t0)
    lab.wait_steady(timeout=RESTART_MAX)
    result = drill_result(lab, name, t0, max(t1, time.monotonic()), holder)
    result.notes.append(f"{holder}'s {pod} {'was started again' if restarted else 'was NOT started again'}")
    return result


def apiserver_term(lab: Lab) -> DrillResult:
    """SIGTERM to the holder's kube-apiserver, as kubelet stops it: /readyz fails at once, it
    serves on for --shutdown-delay-duration, then exits; kubelet starts it again."""
    return _static_pod_fault(lab, "apiserver-term", "kube-apiserver", signal.SIGTERM)


def apiserver_kill(lab: Lab) -> DrillResult:
    """SIGKILL to the holder's kube-apiserver: it is gone at once, nothing drains."""
    return _static_pod_fault(lab, "apiserver-kill", "kube-apiserver", signal.SIGKILL)


def etcd_kill(lab: Lab) -> DrillResult:
    """SIGKILL to the holder's etcd member: two of three members keep quorum; the holder's
    apiserver fails /readyz until its local etcd is back."""
    return _static_pod_fault(lab, "etcd-kill", "etcd", signal.SIGKILL)


# How long backup-power-off keeps the node off at the least: the client must be served again by then
# (a connection that went through haproxy to the lost node's apiserver failed for 4.9 s in one run).
BACKUP_OFF_S = 10.0


def backup_power_off(lab: Lab) -> DrillResult:
    """A whole node that does not hold the VIP loses power (etcd, apiserver, haproxy, keepalived
    with it); two of three remain, so reads and writes must go on. Then it boots again."""
    lab.wait_steady()
    holder = one_holder(lab)
    backup = next(n for n in lab.nodes if n != holder)
    t0 = time.monotonic()
    lab.power_off(backup)
    t1 = _settle(lab, t0)
    time.sleep(max(0.0, t0 + BACKUP_OFF_S - time.monotonic()))  # two members for a while, writes included
    result = drill_result(lab, "backup-power-off", t0, max(t1, time.monotonic()), holder)
    lab.power_on(backup)
    lab.wait_steady(timeout=RESTART_MAX)
    result.notes.append(f"{backup} off for {time.monotonic() - t0:.0f} s in all (booted and steady again)")
    return result


# name -> (what it does, the function); the stand-in drills that apply as they are, then the real ones.
DRILLS: dict[str, Callable[[Lab], DrillResult]] = {
    "haproxy-kill": drills.haproxy_kill,
    "keepalived-kill": drills.keepalived_kill,
    "node-cut": drills.node_cut,
    "node-reboot": drills.node_reboot,
    "apiserver-term": apiserver_term,
    "apiserver-kill": apiserver_kill,
    "etcd-kill": etcd_kill,
    "backup-power-off": backup_power_off,
}
TITLES = {
    "haproxy-kill": "haproxy crashes on the VIP holder",
    "keepalived-kill": "keepalived crashes on the VIP holder",
    "node-cut": "the holder is cut off the network, then healed",
    "node-reboot": "the holder loses power, then boots",
    "apiserver-term": "the holder's kube-apiserver stopped gracefully (SIGTERM)",
    "apiserver-kill": "the holder's kube-apiserver killed (SIGKILL)",
    "etcd-kill": "the holder's etcd member killed (SIGKILL)",
    "backup-power-off": "a node that does not hold the VIP loses power",
}


@dataclass
class RealResult:
    """A drill's result, with what the real client saw from the fault to the drill's end."""

    drill: DrillResult
    probe: p.ProbeWindow
    # Watchers that send nothing (an informer-only controller's idle connection), by their settings:
    # fault -> their first event of a write the probe started after the fault, per watcher.
    idle_watch_gap_s: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run(lab: Lab, recorder: p.ProbeRecorder, name: str, idle: dict[str, p.ProbeRecorder] | None = None) -> RealResult:
    result = DRILLS[name](lab)
    assert result.t_fault is not None and result.t_end is not None
    p.settle_requests(recorder, result.t_end)
    requests, events = recorder.snapshot()
    real = RealResult(result, p.window(requests, events, result.t_fault, result.t_end))
    for label, watcher in (idle or {}).items():
        _, idle_events = watcher.snapshot()
        real.idle_watch_gap_s[label] = {w: p.watch_gap(requests, idle_events, w, result.t_fault) for w in p.WATCHERS}
    return real


def start_probe(lab: Lab, rate: float = 20) -> p.ProbeRecorder:
    """kha-probe in the client's namespace (and cgroup), against kubeadm's admin.conf: the VIP."""
    recorder = p.ProbeRecorder(
        lab.client_argv_prefix(), TOOLS / "kha-probe", lab.kubeconfig, lab.workdir / "probe.log", rate
    )
    recorder.start()
    return recorder


# client-go's HTTP/2 health check: after HTTP2_READ_IDLE_TIMEOUT_SECONDS (default 30) without a frame
# it pings, and drops the connection when no answer comes within HTTP2_PING_TIMEOUT_SECONDS (15).
IDLE_WATCHERS = {
    "client-go defaults": {},
    "read idle 5 s, ping 2 s": {"HTTP2_READ_IDLE_TIMEOUT_SECONDS": "5", "HTTP2_PING_TIMEOUT_SECONDS": "2"},
}


def start_idle_watchers(lab: Lab) -> dict[str, p.ProbeRecorder]:
    """Watch-only kha-probes (no requests on their connection), one per client-go setting."""
    out = {}
    for i, (label, env) in enumerate(IDLE_WATCHERS.items()):
        recorder = p.ProbeRecorder(
            lab.client_argv_prefix(),
            TOOLS / "kha-probe",
            lab.kubeconfig,
            lab.workdir / f"idle-watcher-{i}.log",
            options=("--no-requests",),
            env={**os.environ, **env},
        )
        recorder.start()
        out[label] = recorder
    return out


def with_apiserver_args(config: Path, outdir: Path, args: dict[str, str]) -> dict:
    """`config` with these kube-apiserver flags added to kubernetes.apiserver_args, synthesized in `outdir`."""
    data = copy.deepcopy(yaml.safe_load(config.read_text()))
    data.setdefault("kubernetes", {}).setdefault("apiserver_args", {}).update(args)
    _, json_path = synthesize_config(data, outdir)
    return synth.load(json_path)


def haproxy_stats(lab: Lab, node: str) -> str:
    """The node's haproxy stats as CSV, from its loopback health frontend (as `ops status` reads them)."""
    url = f"http://127.0.0.1:{lab.health_port}{STATS_URI};csv"
    return lab.nodes[node].engine.run(["curl", "-sf", "--max-time", "2", url]).stdout


def read_back(lab: Lab) -> dict[str, int]:
    """The probe's ConfigMaps as kubectl reads them through the VIP: name -> seq."""
    argv = [str(TOOLS / "kubectl"), "--kubeconfig", str(lab.kubeconfig), "get", "configmaps"]
    argv += ["--namespace", "kha-probe", "--selector", "kha-probe=1", "--output", "json"]
    done = subprocess.run(topology.in_ns(topology.CLIENT_NS, argv), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl get configmaps through the VIP failed: {done.stderr.strip()[-500:]}")
    return p.final_state(json.loads(done.stdout)["items"])


def etcd_leaders(lab: Lab) -> dict[str, str]:
    """Each etcd member's view of the leader (etcdctl is not built: the apiserver's /readyz/etcd and
    the members' own /metrics say it): node -> 'leader' | 'follower' | error."""
    out = {}
    for name, node in lab.nodes.items():
        argv = ["curl", "-sk", "--max-time", "2", "http://127.0.0.1:2381/metrics"]
        done = subprocess.run(node.engine.enter(argv), capture_output=True, text=True, timeout=10)
        line = next((x for x in done.stdout.splitlines() if x.startswith("etcd_server_is_leader ")), None)
        out[name] = "leader" if line and line.split()[1] == "1" else ("follower" if line else "no answer")
    return out
