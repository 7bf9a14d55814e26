"""The chaos soak: a seeded random sequence of the lab's faults under the open-loop client, and
the invariants checked over what was recorded.

Production does not inject one fault at a time into a steady system: faults overlap, on
different nodes, at random moments. The schedule is a pure function of the seed (replayable),
and so is the checker, a pure function of the schedule and the recordings (client attempts,
sampled VIP holders): both are unit-tested without a lab. Only `run` touches one, through the
small `Operations` interface (`LabOperations` on the lab).

Invariants (each reported with its count):
- split brain: at most one VIP holder among nodes that can reach each other, never longer than 1 s;
- availability >= 99.5 % of the attempts started while some node has haproxy, keepalived and its
  network working and some apiserver is healthy;
- recovery: after every fault ends, a client attempt is served within 1 s;
- leaks: no process, namespace or container left behind.
With the real control plane (`--control-plane kubeadm`), kha-probe (client-go) runs throughout too,
at most one node is faulty at a time (three etcd members: two faulty nodes lose quorum, and then no
endpoint can serve), "apiserver-unhealthy" is the node's etcd member stopped (its apiserver fails
/readyz while it runs), and three more invariants hold:
- writes kept: every write the probe had acknowledged is there at the end (read back with kubectl
  through the VIP);
- watch order: no resourceVersion the watchers delivered goes backwards, per object;
- etcd leader: exactly one member leads at the end.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lab.world.client import Attempt
from userdata.render import HAPROXY_CONTAINER, KEEPALIVED_CONTAINER

# name: (shortest, longest) seconds it lasts; 0 for a crash that a restart policy answers at once.
KINDS: dict[str, tuple[float, float]] = {
    "haproxy-crash": (0.0, 0.0),
    "keepalived-crash": (0.0, 0.0),
    "apiserver-stop": (2.0, 8.0),
    "apiserver-unhealthy": (2.0, 8.0),
    "cut": (3.0, 10.0),
    "gateway-down": (3.0, 10.0),
    "power-off": (1.0, 10.0),  # a hard reset and a boot: a reboot at the short end
}
CLUSTER_WIDE = frozenset({"gateway-down"})
# What a fault takes from its node while it lasts (for the availability invariant).
BREAKS_NODE = frozenset({"haproxy-crash", "keepalived-crash", "cut", "power-off"})
BREAKS_APISERVER = frozenset({"apiserver-stop", "apiserver-unhealthy", "cut", "power-off"})
ISOLATES = frozenset({"cut", "power-off"})

SPLIT_BRAIN_MAX_S = 1.0
AVAILABILITY_MIN = 0.995
RECOVERY_MAX_S = 1.0


@dataclass(frozen=True, order=True)
class Fault:
    """One fault: injected at `start`, over at `end` (seconds from the soak's start)."""

    start: float
    end: float
    kind: str
    node: str | None  # None: the whole cluster (the gateway)

    def active(self, t: float) -> bool:
        return self.start <= t < self.end

    def __str__(self) -> str:
        where = self.node or "cluster"
        return f"{self.start:7.2f}-{self.end:7.2f} s  {self.kind:<20} {where}"


QUIET_TAIL_S = 5.0  # every fault is over this long before the soak ends


def schedule(
    seed: int,
    duration_s: float,
    nodes: Sequence[str],
    kinds: dict[str, tuple[float, float]] = KINDS,
    gap_s: tuple[float, float] = (8.0, 30.0),
    burst: tuple[int, int] = (1, 3),
    spread_s: float = 3.0,
    max_busy_nodes: int | None = None,
    restart_s: float = 0.1,
) -> list[Fault]:
    """A reproducible fault sequence: the same seed and arguments give the same list.

    Faults come in bursts of 1 to 3 that start within `spread_s` of each other, so they overlap
    (a haproxy dies while another node is cut off), separated by quiet gaps. Never two faults on
    one node at a time, and at most `max_busy_nodes` nodes (default: all but one) faulty at once;
    a fault that finds no free node is dropped. Every fault ends QUIET_TAIL_S before the end."""
    rng = random.Random(seed)
    busy_limit = len(nodes) - 1 if max_busy_nodes is None else max_busy_nodes
    names = sorted(kinds)
    free_at: dict[str | None, float] = {}
    faults: list[Fault] = []
    t = rng.uniform(*gap_s) / 2
    while True:
        offsets = sorted(rng.uniform(0, spread_s) for _ in range(rng.randint(*burst)))
        for offset in offsets:
            start = t + offset
            kind = names[rng.randrange(len(names))]
            lo, hi = kinds[kind]
            length = rng.uniform(lo, hi) if hi > 0 else restart_s
            pick = rng.random()
            if start + length > duration_s - QUIET_TAIL_S:
                return faults
            if kind in CLUSTER_WIDE:
                candidates: list[str | None] = [None] if free_at.get(None, 0.0) <= start else []
            else:
                busy = [n for n in nodes if free_at.get(n, 0.0) > start]
                candidates = [n for n in nodes if n not in busy] if len(busy) < busy_limit else []
            if candidates:
                node = candidates[int(pick * len(candidates))]
                faults.append(Fault(round(start, 3), round(start + length, 3), kind, node))
                free_at[node] = start + length
        t += spread_s + rng.uniform(*gap_s)


# --- what the lab recorded, and the verdict ------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """The nodes holding the VIP at time t (seconds from the soak's start)."""

    t: float
    holders: tuple[str, ...]


def groups(faults: Sequence[Fault], nodes: Sequence[str], t: float) -> list[set[str]]:
    """Nodes that can reach each other at t: each isolated node alone, the others together."""
    alone = {f.node for f in faults if f.kind in ISOLATES and f.active(t) and f.node is not None}
    rest = {n for n in nodes if n not in alone}
    return [{n} for n in sorted(alone)] + ([rest] if rest else [])


def serviceable(faults: Sequence[Fault], nodes: Sequence[str], t: float) -> bool:
    """Some node has haproxy, keepalived and its network working, and some apiserver is healthy.

    A node's network works when it reaches a peer or the gateway: one that reaches neither is
    cut off by the design's own definition (it must give up the VIP), even if the client could
    still reach it, as when the gateway is down and every other node cut off or powered off."""
    active = [f for f in faults if f.active(t)]
    alone = {f.node for f in active if f.kind in ISOLATES}
    gateway_down = any(f.kind in CLUSTER_WIDE for f in active)

    def reaches_something(n: str) -> bool:
        return not gateway_down or any(m not in alone for m in nodes if m != n)

    working = [
        n for n in nodes if not any(f.node == n and f.kind in BREAKS_NODE for f in active) and reaches_something(n)
    ]
    apiservers = [n for n in nodes if not any(f.node == n and f.kind in BREAKS_APISERVER for f in active)]
    return bool(working) and bool(apiservers)


@dataclass(frozen=True)
class Invariant:
    name: str
    violations: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass
class SoakReport:
    seed: int
    faults: int
    invariants: list[Invariant] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.invariants)

    def format(self, replay: str) -> str:
        lines = [f"soak seed {self.seed}: {self.faults} faults"]
        for inv in self.invariants:
            lines.append(f"  {'ok  ' if inv.ok else 'FAIL'} {inv.name:<13} {inv.violations} violation(s); {inv.detail}")
        lines.append("PASSED" if self.ok else f"FAILED (seed {self.seed}); replay: {replay}")
        return "\n".join(lines)


def split_brain(faults: Sequence[Fault], nodes: Sequence[str], samples: Sequence[Sample]) -> Invariant:
    """Episodes where one group of mutually reachable nodes had two holders for more than 1 s."""
    episodes: list[tuple[float, float]] = []
    since: float | None = None
    last = 0.0
    for s in samples:
        double = any(len(g & set(s.holders)) > 1 for g in groups(faults, nodes, s.t))
        if double and since is None:
            since = s.t
        elif not double and since is not None:
            episodes.append((since, s.t))
            since = None
        last = s.t
    if since is not None:
        episodes.append((since, last))
    longest = max((b - a for a, b in episodes), default=0.0)
    bad = [(a, b) for a, b in episodes if b - a > SPLIT_BRAIN_MAX_S]
    where = f"; first at {bad[0][0]:.2f} s" if bad else ""
    return Invariant(
        "split brain", len(bad), f"{len(episodes)} episode(s) of two holders, longest {longest:.2f} s{where}"
    )


def blame(faults: Sequence[Fault], attempts: Sequence[Attempt], after_s: float = 2.0) -> dict[str, int]:
    """Failed attempts by the kind of the latest fault that started before each (and ended at
    most `after_s` earlier); "none" when no fault is near."""
    out: dict[str, int] = {}
    for a in attempts:
        if a.ok:
            continue
        near = [f for f in faults if f.start <= a.start <= f.end + after_s]
        kind = max(near).kind if near else "none"
        out[kind] = out.get(kind, 0) + 1
    return out


def availability(faults: Sequence[Fault], nodes: Sequence[str], attempts: Sequence[Attempt]) -> Invariant:
    counted = [a for a in attempts if serviceable(faults, nodes, a.start)]
    served = sum(a.ok for a in counted)
    share = served / len(counted) if counted else 1.0
    violations = 0 if share >= AVAILABILITY_MIN else 1
    failed = ", ".join(f"{k} {n}" for k, n in sorted(blame(faults, counted).items(), key=lambda kv: -kv[1]))
    return Invariant(
        "availability",
        violations,
        f"{share * 100:.2f} % of {len(counted)} attempts (at least "
        f"{AVAILABILITY_MIN * 100:.1f} %); failed after: {failed or 'nothing'}",
    )


def recovery(faults: Sequence[Fault], nodes: Sequence[str], attempts: Sequence[Attempt]) -> Invariant:
    """Per ended fault: the first served attempt started at or after the end, within 1 s."""
    ordered = sorted(attempts, key=lambda a: a.start)
    late: list[tuple[Fault, float]] = []
    worst = 0.0
    for f in faults:
        if not serviceable(faults, nodes, f.end):
            continue
        first = next((a.start for a in ordered if a.ok and a.start >= f.end), None)
        delay = (first - f.end) if first is not None else float("inf")
        worst = max(worst, delay)
        if delay > RECOVERY_MAX_S:
            late.append((f, delay))
    where = f"; first: {late[0][0].kind} on {late[0][0].node} ending at {late[0][0].end:.2f} s" if late else ""
    return Invariant("recovery", len(late), f"slowest {worst:.2f} s after a fault ended{where}")


def writes_kept(lost: Sequence[str], acknowledged: int) -> Invariant:
    detail = f"{acknowledged} acknowledged writes, {len(lost)} missing" + (f": {', '.join(lost[:3])}" if lost else "")
    return Invariant("writes kept", len(lost), detail)


def watch_order(regressions: Sequence[str]) -> Invariant:
    return Invariant("watch order", len(regressions), regressions[0] if regressions else "never backwards")


def etcd_leader(leaders: dict[str, str]) -> Invariant:
    count = sum(v == "leader" for v in leaders.values())
    return Invariant("etcd leader", 0 if count == 1 else 1, f"{count} leader(s) at the end: {leaders}")


def leaks(leftovers: Sequence[str]) -> Invariant:
    return Invariant("leaks", len(leftovers), ", ".join(leftovers) if leftovers else "nothing left behind")


def check(
    seed: int,
    faults: Sequence[Fault],
    nodes: Sequence[str],
    attempts: Sequence[Attempt],
    samples: Sequence[Sample],
    leftovers: Sequence[str],
) -> SoakReport:
    return SoakReport(
        seed,
        len(faults),
        [
            split_brain(faults, nodes, samples),
            availability(faults, nodes, attempts),
            recovery(faults, nodes, attempts),
            leaks(leftovers),
        ],
    )


# --- running it against a lab --------------------------------------------------------------------
class Operations(Protocol):
    """What the soak needs of a lab: inject and end faults, see holders and client attempts."""

    nodes: Sequence[str]

    def inject(self, fault: Fault) -> None: ...

    def restore(self, fault: Fault) -> None: ...

    def holders(self) -> list[str]: ...

    def attempts(self, since: float) -> list[Attempt]: ...


def run(
    ops: Operations,
    faults: Sequence[Fault],
    duration_s: float,
    period: float = 0.05,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[list[Fault], list[Attempt], list[Sample]]:
    """Play the schedule in real time, each fault in a thread of its own (a boot may take seconds
    and must not delay the next fault). Returns the faults as they really happened (times from
    the soak's start), the client's attempts and the holder samples, on the soak's clock."""
    t0 = time.monotonic()
    samples: list[Sample] = []
    happened: list[Fault] = []
    errors: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            holders = tuple(ops.holders())
            samples.append(Sample(time.monotonic() - t0, holders))
            stop.wait(period)

    def play(fault: Fault) -> None:
        try:
            time.sleep(max(0.0, t0 + fault.start - time.monotonic()))
            start = time.monotonic() - t0
            log(f"{start:7.2f} s  {fault.kind} {fault.node or ''}")
            ops.inject(fault)
            time.sleep(max(0.0, t0 + fault.end - time.monotonic()))
            ops.restore(fault)
            happened.append(
                Fault(round(start, 3), round(max(time.monotonic() - t0, fault.end), 3), fault.kind, fault.node)
            )
        except Exception as err:  # reported, and the soak fails: a fault that could not be played
            errors.append(f"{fault}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=sample, name="soak-holders", daemon=True)]
    threads += [threading.Thread(target=play, args=(f,), name=f"soak-{i}", daemon=True) for i, f in enumerate(faults)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads[1:]:
            thread.join()
        time.sleep(max(0.0, t0 + duration_s - time.monotonic()))
    finally:
        stop.set()
        threads[0].join()
    if errors:
        raise RuntimeError("faults that could not be played: " + "; ".join(errors))
    attempts = [
        Attempt(a.start - t0, a.end - t0, a.ok, a.node, a.error) for a in ops.attempts(t0) if a.start < t0 + duration_s
    ]
    return sorted(happened), attempts, samples


class LabOperations:
    """The soak's faults on the lab: a crash is a SIGKILL that Docker's restart policy answers."""

    def __init__(self, lab) -> None:  # lab.world.harness.Lab; not imported here, so the checker needs no lab
        self.lab = lab
        self.nodes: Sequence[str] = list(lab.nodes)

    def _etcd(self, node: str | None, stopped: bool) -> None:
        """The real control plane's "apiserver unhealthy": the node's etcd member stopped (held down)."""
        assert node is not None  # a node's fault
        kubelet = self.lab.nodes[node].kubelet
        kubelet.hold("etcd", stopped)
        if stopped and kubelet.running("etcd"):
            kubelet.signal("etcd", 9)

    def inject(self, fault: Fault) -> None:
        lab = self.lab
        if fault.kind == "gateway-down":
            lab.topology.gateway_down()
            return
        node = lab.nodes[fault.node]
        if fault.kind == "haproxy-crash":
            node.crash(HAPROXY_CONTAINER)
        elif fault.kind == "keepalived-crash":
            node.crash(KEEPALIVED_CONTAINER)
        elif fault.kind == "apiserver-stop":
            node.kill_apiserver()
        elif fault.kind == "apiserver-unhealthy" and node.kubelet is not None:
            self._etcd(fault.node, True)
        elif fault.kind == "apiserver-unhealthy":
            node.set_healthy(False)
        elif fault.kind == "cut":
            lab.topology.cut(fault.node)
        elif fault.kind == "power-off":
            lab.power_off(fault.node)
        else:
            raise ValueError(f"fault kind {fault.kind!r}: this lab cannot inject it")

    def restore(self, fault: Fault) -> None:
        lab = self.lab
        if fault.kind == "gateway-down":
            lab.topology.gateway_down(False)
            return
        if fault.kind == "apiserver-stop":
            lab.nodes[fault.node].apiserver.start()
        elif fault.kind == "apiserver-unhealthy" and lab.nodes[fault.node].kubelet is not None:
            self._etcd(fault.node, False)
        elif fault.kind == "apiserver-unhealthy":
            lab.nodes[fault.node].set_healthy(True)
        elif fault.kind == "cut":
            lab.topology.cut(fault.node, False)
        elif fault.kind == "power-off":
            lab.power_on(fault.node)
        # crashes: Docker's restart policy has already answered

    def holders(self) -> list[str]:
        return self.lab.holders()

    def attempts(self, since: float) -> list[Attempt]:
        return self.lab.client.between(since)


def leftovers(workdir: str | None) -> list[str]:
    """What a finished lab left behind: kha- namespaces, mounts and cgroups, its work dir, and
    processes that name the work dir (engines) or live in a node's cgroup (containers)."""
    import os
    from pathlib import Path

    from lab.world.engine import CGROUP_ROOT
    from lab.world.topology import PREFIX, lab_namespaces

    found = [f"netns {ns}" for ns in lab_namespaces()]
    found += [f"cgroup {d}" for d in CGROUP_ROOT.glob(f"*/{PREFIX}*")]
    if workdir:
        found += [
            f"mount {m.split()[1]}"
            for m in Path("/proc/self/mounts").read_text().splitlines()
            if m.split()[1].startswith(workdir)
        ]
        if Path(workdir).exists():
            found.append(f"dir {workdir}")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if (workdir and workdir in cmdline) or f"/{PREFIX}" in cgroup:
            found.append(f"process {pid} ({cmdline[:60].strip()})")
    return found
