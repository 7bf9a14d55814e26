"""The real Kubernetes client of the lab: kha-probe (kube/k8s/probe, client-go of the pinned release)
through the VIP, and what its log says about a fault.

kha-probe runs in the client's namespace with kubeadm's admin.conf (server: the VIP): an open-loop
request loop (GET, create and update of ConfigMaps carrying a sequence number), a raw watch that
reconnects at once and an informer, every result and event one JSON line stamped with
CLOCK_MONOTONIC, the clock the lab's own timestamps use (kube/README.md has the format). The
functions below read those lines; they take plain lists, so the tests can feed them made-up logs.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.world.procs import Proc

WATCHERS = ("raw", "informer")
WRITES = ("create", "update")


@dataclass(frozen=True)
class Request:
    op: str
    seq: int
    start: float
    end: float
    ok: bool
    code: int
    err: str | None
    key: str


@dataclass(frozen=True)
class Event:
    t: float
    watcher: str
    type: str
    name: str
    seq: int
    rv: str


class ProbeRecorder:
    """Runs kha-probe (argv prefix: the client's namespace and cgroup) and keeps every line it prints."""

    def __init__(self, argv_prefix: list[str], binary: Path, kubeconfig: Path, log: Path, rate: float = 20):
        self.requests: list[Request] = []
        self.events: list[Event] = []
        self.watch_states: list[dict] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        argv = [*argv_prefix, str(binary), "--kubeconfig", str(kubeconfig), "--rate", f"{rate:g}"]
        self.proc = Proc("probe", argv, log, self._on_line)

    def _on_line(self, _t: float, line: str) -> None:
        if not line.startswith("{"):
            return
        d = json.loads(line)
        with self._lock:
            if d["kind"] == "request":
                self.requests.append(Request(d["op"], d["seq"], d["s"], d["e"], d["ok"], d["code"], d["err"], d["key"]))
            elif d["kind"] == "event":
                self.events.append(Event(d["t"], d["watcher"], d["type"], d["name"], d["seq"], d["rv"]))
            elif d["kind"] == "watch":
                self.watch_states.append(d)
            elif d["kind"] == "ready":
                self.ready.set()

    def start(self, timeout: float = 60) -> None:
        self.proc.start()
        if not self.ready.wait(timeout):
            raise TimeoutError(f"kha-probe not ready after {timeout} s (log: {self.proc.log})")

    def stop(self) -> None:
        self.proc.stop(grace=5)

    def snapshot(self) -> tuple[list[Request], list[Event]]:
        with self._lock:
            return list(self.requests), list(self.events)


@dataclass(frozen=True)
class ProbeWindow:
    """What the real client saw from a fault (t0) to the end of its drill (t1)."""

    requests: int
    failed: int
    outage_s: float  # t0 -> the first request that succeeded after the last failure (0 without failures)
    watch_gap_s: dict[str, float | None]  # t0 -> the first event of a write started after t0, per watcher


def window(requests: list[Request], events: list[Event], t0: float, t1: float) -> ProbeWindow:
    inside = sorted((r for r in requests if r.end >= t0 and r.start < t1), key=lambda r: r.start)
    failures = [r for r in inside if not r.ok]
    outage = 0.0
    if failures:
        last = max(r.start for r in failures)
        back = [r.start for r in inside if r.ok and r.start > last]
        outage = (min(back) if back else t1) - t0
    return ProbeWindow(
        len(inside), len(failures), max(0.0, outage), {w: watch_gap(requests, events, w, t0) for w in WATCHERS}
    )


def watch_gap(requests: list[Request], events: list[Event], watcher: str, t0: float) -> float | None:
    """From t0 until `watcher` delivered the first event of a write started at or after t0 (None: never)."""
    after = {r.seq for r in requests if r.op in WRITES and r.start >= t0}
    seen = [e.t for e in events if e.watcher == watcher and e.seq in after and e.type != "DELETED"]
    return min(seen) - t0 if seen else None


def lost_writes(requests: list[Request], final: dict[str, int]) -> list[str]:
    """Acknowledged writes that the final state (ConfigMap name -> its seq) does not hold: a create
    whose object is gone, or a key whose last value is older than its last acknowledged update."""
    lost = [f"create {r.key} (seq {r.seq})" for r in requests if r.op == "create" and r.ok and r.key not in final]
    last_update: dict[str, int] = {}
    for r in requests:
        if r.op == "update" and r.ok:
            last_update[r.key] = max(last_update.get(r.key, -1), r.seq)
    lost += [
        f"update {key} (seq {seq}; holds {final.get(key)})"
        for key, seq in sorted(last_update.items())
        if final.get(key, -1) < seq
    ]
    return lost


def rv_regressions(events: list[Event]) -> list[str]:
    """Objects whose resourceVersion went backwards in a watcher's stream (a relist may repeat one)."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for e in sorted(events, key=lambda e: e.t):
        key = (e.watcher, e.name)
        rv = int(e.rv)
        if rv < seen.get(key, -1):
            out.append(f"{e.watcher}: {e.name} went from resourceVersion {seen[key]} back to {rv}")
        seen[key] = max(seen.get(key, -1), rv)
    return out


def final_state(items: list[dict]) -> dict[str, int]:
    """`kubectl get configmaps -o json`'s items as the probe's ConfigMap name -> seq."""
    return {i["metadata"]["name"]: int(i.get("data", {}).get("seq", -1)) for i in items}


def med_max(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {max(values):.2f}" if values else "-"


def settle_requests(recorder: ProbeRecorder, until: float, timeout: float = 1.5) -> None:
    """Wait until the requests started before `until` have reported (each ends by its timeout)."""
    time.sleep(max(0.0, until + timeout - time.monotonic()))
