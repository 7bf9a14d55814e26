"""The real Kubernetes client of the lab: kha-probe (kube/k8s/probe, client-go of the pinned release)
through the VIP, and what its log says about a fault.

kha-probe runs in the client's namespace with kubeadm's admin.conf (server: the VIP): an open-loop
request loop (GET, create and update of ConfigMaps carrying a sequence number), a raw watch that
reconnects at once and an informer, every result and event one JSON line stamped with
CLOCK_MONOTONIC, the clock the lab's own timestamps use (kube/README.md has the format). This is
the one reader of those lines (`parse`, and the recorder as they come); the functions below take
plain lists, so the tests can feed them made-up logs, and `problems` gathers every invariant.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    rv: str | None = None  # the result's resourceVersion: a write's is what the watchers must deliver


@dataclass(frozen=True)
class Event:
    t: float
    watcher: str
    type: str
    name: str
    seq: int
    rv: str


def _request(d: dict[str, Any]) -> Request:
    return Request(d["op"], d["seq"], d["s"], d["e"], d["ok"], d["code"], d["err"], d["key"], d["rv"])


def _event(d: dict[str, Any]) -> Event:
    return Event(d["t"], d["watcher"], d["type"], d["name"], d["seq"], d["rv"])


@dataclass
class ProbeLog:
    """A whole run of the probe, read back."""

    requests: list[Request] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    watch_states: list[dict[str, Any]] = field(default_factory=list)
    ready: float | None = None
    done: dict[str, Any] | None = None


def add_line(log: ProbeLog, line: str) -> str | None:
    """One line of the probe's stdout into `log`; its kind, or None for a line that is not JSON."""
    if not line.startswith("{"):
        return None
    d = json.loads(line)
    if d["kind"] == "request":
        log.requests.append(_request(d))
    elif d["kind"] == "event":
        log.events.append(_event(d))
    elif d["kind"] == "watch":
        log.watch_states.append(d)
    elif d["kind"] == "ready":
        log.ready = d["t"]
    elif d["kind"] == "done":
        log.done = d
    return str(d["kind"])


def parse(lines: Iterable[str]) -> ProbeLog:
    """The probe's stdout, line by line; events keep the order in which they were printed."""
    log = ProbeLog()
    for line in lines:
        add_line(log, line)
    return log


class ProbeRecorder:
    """Runs kha-probe (argv prefix: the client's namespace and cgroup) and keeps every line it prints."""

    def __init__(
        self,
        argv_prefix: list[str],
        binary: Path,
        kubeconfig: Path,
        log: Path,
        rate: float = 20,
        options: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ):
        """`options`: more of kha-probe's flags (--no-requests: a watcher only); `env`: its environment
        (client-go reads HTTP2_READ_IDLE_TIMEOUT_SECONDS and HTTP2_PING_TIMEOUT_SECONDS there)."""
        self.log = ProbeLog()
        self.requests, self.events, self.watch_states = self.log.requests, self.log.events, self.log.watch_states
        self.ready = threading.Event()
        self._lock = threading.Lock()
        argv = [*argv_prefix, str(binary), "--kubeconfig", str(kubeconfig), "--rate", f"{rate:g}", *options]
        self.proc = Proc(log.stem, argv, log, self._on_line, env=env)

    def _on_line(self, _t: float, line: str) -> None:
        with self._lock:
            if add_line(self.log, line) == "ready":
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
    whose object is gone, or a key whose last value is older than its last acknowledged update and
    is not the value of an update that was never acknowledged (the updates carry no precondition: one
    that timed out at the client may still be applied after a later one, and then it wins, as the
    API promises)."""
    lost = [f"create {r.key} (seq {r.seq})" for r in requests if r.op == "create" and r.ok and r.key not in final]
    last_update: dict[str, int] = {}
    unacknowledged: set[tuple[str, int]] = set()
    for r in requests:
        if r.op == "update" and r.ok:
            last_update[r.key] = max(last_update.get(r.key, -1), r.seq)
        elif r.op == "update":
            unacknowledged.add((r.key, r.seq))
    lost += [
        f"update {key} (seq {seq}; holds {final.get(key)})"
        for key, seq in sorted(last_update.items())
        if final.get(key, -1) < seq and (key, final.get(key, -1)) not in unacknowledged
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


def unseen_writes(requests: list[Request], events: list[Event], watcher: str) -> list[str]:
    """Acknowledged writes for which `watcher` delivered no event (the object's name and the write's
    resourceVersion)."""
    seen = {(e.name, e.rv) for e in events if e.watcher == watcher}
    return [
        f"{watcher}: no event for {r.op} {r.key} (seq {r.seq}, resourceVersion {r.rv})"
        for r in requests
        if r.ok and r.op in WRITES and (r.key, r.rv) not in seen
    ]


def stream_regressions(events: list[Event], watcher: str = "raw") -> list[str]:
    """Events whose resourceVersion is below one `watcher` delivered before, whatever the object: on
    the raw watch's one stream (reconnects and relists resume above it) that never happens; an
    informer's relist replays objects in name order, so there only rv_regressions holds."""
    out, top = [], 0
    for e in (e for e in events if e.watcher == watcher):
        if int(e.rv) < top:
            out.append(f"{watcher}: resourceVersion went from {top} back to {e.rv} ({e.name})")
        top = max(top, int(e.rv))
    return out


def seq_regressions(events: list[Event]) -> list[str]:
    """Objects whose seq went backwards in a watcher's stream. Updates are unconditional: one that
    hangs can land after a later one to the same key, and its seq then goes back in the store too."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for e in sorted(events, key=lambda e: e.t):
        key = (e.watcher, e.name)
        if e.seq < seen.get(key, -1):
            out.append(f"{e.watcher}: {e.name} went from seq {seen[key]} back to {e.seq}")
        seen[key] = max(seen.get(key, -1), e.seq)
    return out


def problems(log: ProbeLog, final: dict[str, int], watchers: Iterable[str] = WATCHERS) -> list[str]:
    """Everything a run and the ConfigMaps read back after it break, one line each: acknowledged
    writes lost, writes a watcher never delivered (not asked of the raw watch after a relist, which
    skips events by design), and resourceVersions or seqs going back."""
    found = [f"acknowledged write lost: {lost}" for lost in lost_writes(log.requests, final)]
    relisted = any(s["state"] == "relist" for s in log.watch_states)
    for watcher in watchers:
        if not (watcher == "raw" and relisted):
            found += unseen_writes(log.requests, log.events, watcher)
    events = [e for e in log.events if e.watcher in watchers]
    return found + stream_regressions(events) + rv_regressions(events) + seq_regressions(events)


def final_state(items: list[dict]) -> dict[str, int]:
    """`kubectl get configmaps -o json`'s items as the probe's ConfigMap name -> seq."""
    return {i["metadata"]["name"]: int(i.get("data", {}).get("seq", -1)) for i in items}


def med_max(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {max(values):.2f}" if values else "-"


def settle_requests(recorder: ProbeRecorder, until: float, timeout: float = 1.5) -> None:
    """Wait until the requests started before `until` have reported (each ends by its timeout)."""
    time.sleep(max(0.0, until + timeout - time.monotonic()))
