"""The drills: inject one fault into a steady lab, watch the client, put the lab back.

Tests and the benchmark run the same functions. Each regular drill starts from and returns to
the steady state (`Lab.wait_steady`), so drills can run one after another on one lab. The
negative controls (`lab.scenarios.controls`) build their own lab and share the figures here.

Outage (seconds): from the fault injection to the start of the first successful client attempt
that started after the last failed attempt of the window; 0 when no attempt failed. Attempts
start every 20 ms whatever earlier ones do, so this is accurate to about 20 ms even when failing
attempts take their full one-second timeout.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.world import apiserver
from lab.world.client import TIMEOUT, Attempt
from lab.world.harness import Lab
from lab.world.node import LabNode
from userdata.render import HAPROXY_CONTAINER, KEEPALIVED_CONTAINER

SETTLE_MIN = 3.0  # watch every fault at least this long: some failures only start later
SETTLE_QUIET = 1.5  # and until the client has been served this long without a failure
SETTLE_MAX = 20.0
CUT_MAX = 8.0  # a cut lasts until the cut node has given up the VIP in its island, at most this long
SLOW = 0.5  # an attempt slower than this waited for something (a lost SYN waits about 1 s)


@dataclass(frozen=True)
class Window:
    """What the client saw from a fault on."""

    outage_s: float
    failed: int
    attempts: int
    recovered: bool

    @staticmethod
    def of(attempts: list[Attempt], t_fault: float, t_end: float) -> Window:
        failures = [a for a in attempts if not a.ok]
        if not failures:
            return Window(0.0, 0, len(attempts), True)
        last = max(a.start for a in failures)
        back = [a.start for a in attempts if a.ok and a.start > last]
        recovered = bool(back)
        outage = (min(back) if recovered else t_end) - t_fault
        return Window(max(0.0, outage), len(failures), len(attempts), recovered)


@dataclass
class DrillResult:
    drill: str
    variant: str
    outage_s: float
    failed: int
    holder_before: str | None
    holder_after: str | None
    holders_at_end: int
    recovered: bool = True
    detection_s: float | None = (
        None  # fault -> the holder notices (apiserver: haproxy marks it DOWN; crash: keepalived FAULT)
    )
    failed_after_detection: int | None = None
    second: Window | None = None  # the heal of a cut, the restart of a killed keepalived
    slow_attempts: int | None = None  # attempts started after the fault that took longer than SLOW
    vip_moves: int | None = None  # VIP moves watched: after a cut heals; all along while the gateway is down
    served_after_s: float | None = None  # cold start: client served again, from the first haproxy's start
    double_holder_s: float | None = None  # the longest time two nodes held the VIP at once
    not_accepting_s: float | None = None  # drain: SIGTERM -> the apiserver stopped accepting
    last_served_s: float | None = None  # drain: SIGTERM -> start of the last attempt that apiserver answered
    answered_by: dict[str, int] = field(default_factory=dict)
    slowest_s: float | None = None  # the longest attempt that started after the fault (failed ones: the timeout)
    master_transitions: int = 0  # "Entering MASTER STATE" lines, all nodes, during the drill
    vrrp_states: dict[str, str] = field(default_factory=dict)  # each keepalived at the end
    notes: list[str] = field(default_factory=list)
    t_fault: float | None = None  # monotonic: when the fault was made (the real client's figures start there)
    t_end: float | None = None  # and when the drill stopped watching


def one_holder(lab: Lab) -> str:
    """The VIP holder of a lab about to take a fault: exactly one, or an AssertionError."""
    holders = lab.holders()
    if len(holders) != 1:
        raise AssertionError(f"expected one VIP holder before the drill, found {holders}")
    return holders[0]


def _settle(lab: Lab, t0: float, holders_ok: Callable[[list[str]], bool] = lambda h: len(h) == 1) -> float:
    """Wait until the fault has played out: at least SETTLE_MIN, then SETTLE_QUIET seconds of
    served attempts, keepalived settled, with an acceptable set of VIP holders (at most
    SETTLE_MAX). Returns the end."""
    while True:
        now = time.monotonic()
        recent = [a for a in lab.client.between(now - SETTLE_QUIET) if a.end <= now]
        quiet = now - t0 >= SETTLE_MIN and recent and all(a.ok for a in recent) and lab.vrrp_unsettled() is None
        if (quiet and holders_ok(lab.holders())) or now - t0 >= SETTLE_MAX:
            return now
        time.sleep(0.1)


def _window(lab: Lab, t0: float, t1: float) -> Window:
    time.sleep(max(0.0, t1 + TIMEOUT + 0.1 - time.monotonic()))  # let attempts in flight report
    return Window.of(lab.client.between(t0, t1), t0, t1)


def drill_result(
    lab: Lab, name: str, t0: float, t1: float, before: str | None, window: Window | None = None
) -> DrillResult:
    """The drill's result over [t0, t1]; `window` when the outage is not that of [t0, t1]."""
    w = window or _window(lab, t0, t1)
    holders = lab.holders()
    answered: dict[str, int] = {}
    attempts = lab.client.between(t0, t1)
    for a in attempts:
        if a.ok and a.node is not None:  # an attempt that was served says by which node
            answered[a.node] = answered.get(a.node, 0) + 1
    after = [a.end - a.start for a in attempts if a.start >= t0]
    masters = sum(
        1 for n in lab.nodes.values() for e in n.daemons.events_between("keepalived", "Entering MASTER STATE", t0, t1)
    )
    return DrillResult(
        name,
        lab.variant,
        w.outage_s,
        w.failed,
        before,
        holders[0] if len(holders) == 1 else None,
        len(holders),
        w.recovered,
        answered_by=answered,
        slowest_s=max(after, default=None),
        slow_attempts=sum(d > SLOW for d in after),
        master_transitions=masters,
        vrrp_states={n: d.daemons.vrrp_state for n, d in lab.nodes.items()},
        t_fault=t0,
        t_end=t1,
    )


def vip_moves(samples: list[tuple[str, ...]], holder: str | None) -> int:
    """How often the VIP changed hands in a sequence of holder samples, starting at `holder`.

    Only samples with exactly one holder count: none or two are the instants of a handover (or a
    cut node's stale copy of the VIP next to the real holder) and say nothing about who serves."""
    moves = 0
    for sample in samples:
        if len(sample) == 1 and sample[0] != holder:
            moves, holder = moves + 1, sample[0]
    return moves


class HolderLog:
    """Samples the VIP holders in the background while in a `with` block."""

    def __init__(self, lab: Lab, period: float = 0.05):
        self.lab = lab
        self.period = period
        self.samples: list[tuple[str, ...]] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holder-log", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(tuple(self.lab.holders()))
            self.times.append(time.monotonic())
            self._stop.wait(self.period)

    def longest_double(self) -> float:
        """The longest stretch during which two or more nodes held the VIP at once (seconds)."""
        longest, since = 0.0, None
        for t, sample in zip(self.times, self.samples, strict=True):
            if len(sample) > 1 and since is None:
                since = t
            elif len(sample) <= 1 and since is not None:
                longest, since = max(longest, t - since), None
        if since is not None and self.times:
            longest = max(longest, self.times[-1] - since)
        return longest

    def __enter__(self) -> HolderLog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _wait_for(condition: Callable[[], bool], deadline: float) -> bool:
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _restarts(lab: Lab, node: str, container: str, t0: float) -> str:
    gaps = lab.nodes[node].daemons.container(container).restarts_after(t0)
    return (
        f"Docker restarted {container} on {node} {len(gaps)}x, down "
        + ", ".join(f"{b - a:.2f}" for a, b in gaps)
        + " s"
    )


# --- drills on a steady lab -------------------------------------------------------------------
def _crash(lab: Lab, name: str, container: str, evidence: str | None = None) -> DrillResult:
    """SIGKILL a container's main process on the VIP holder; Docker's restart policy answers.
    `evidence`: a pattern for the container's log lines after the crash to put in the notes."""
    lab.wait_steady()
    holder = one_holder(lab)
    t0 = time.monotonic()
    lab.nodes[holder].crash(container)
    t1 = _settle(lab, t0)
    result = drill_result(lab, name, t0, t1, holder)
    result.notes.append(_restarts(lab, holder, container, t0))
    fault = lab.nodes[holder].daemons.first_event("keepalived", r"Entering FAULT STATE", t0)
    if fault is not None:  # detection: keepalived on the holder has seen the crash
        result.detection_s = fault.t - t0
    if evidence:
        result.notes += [
            f"{holder} {container}: {e.text}"
            for e in lab.nodes[holder].daemons.events_between(container, evidence, t0, t1)
        ]
    lab.wait_steady()
    return result


def haproxy_kill(lab: Lab) -> DrillResult:
    """haproxy crashes on the holder (SIGKILL): Docker restarts it; the VIP may move or stay."""
    return _crash(lab, "haproxy-kill", HAPROXY_CONTAINER)


def haproxy_stop(lab: Lab) -> DrillResult:
    """haproxy stopped on the holder (`docker stop`, stays down): keepalived's check must move the VIP."""
    lab.wait_steady()
    holder = one_holder(lab)
    t0 = time.monotonic()
    lab.nodes[holder].stop_container(HAPROXY_CONTAINER)
    result = drill_result(lab, "haproxy-stop", t0, _settle(lab, t0), holder)
    lab.nodes[holder].start_container(HAPROXY_CONTAINER)
    lab.wait_steady()
    return result


def _move_vip_away(lab: Lab, holder: str) -> None:
    """Stop haproxy on the holder and wait until one other node holds the VIP."""
    lab.nodes[holder].stop_container(HAPROXY_CONTAINER)
    _settle(lab, time.monotonic(), lambda h: len(h) == 1 and h[0] != holder)


def haproxy_recover(lab: Lab) -> DrillResult:
    """Bring a stopped haproxy back: the VIP must stay where it went (no preemption)."""
    lab.wait_steady()
    old = one_holder(lab)
    _move_vip_away(lab, old)
    holder = one_holder(lab)
    t0 = time.monotonic()
    lab.nodes[old].start_container(HAPROXY_CONTAINER)
    result = drill_result(lab, "haproxy-recover", t0, _settle(lab, t0), holder)
    result.notes.append(f"haproxy started again on {old}, which held the VIP before it was stopped")
    lab.wait_steady()
    return result


def keepalived_kill(lab: Lab) -> DrillResult:
    """keepalived crashes on the holder (SIGKILL, the VIP left on the interface): Docker restarts
    it, and the image's start-up removes the VIP before keepalived runs."""
    return _crash(lab, "keepalived-kill", KEEPALIVED_CONTAINER, evidence=VIP_CLEANUP)


VIP_CLEANUP = r"removing \S+ from \S+"  # the keepalived image's start-up, for a VIP a killed keepalived left


CRASHES = 5
CRASH_SPAN = 10.0


def crash_loop(lab: Lab) -> DrillResult:
    """The holder's haproxy crashes 5 times in 10 s (each time once Docker has restarted it).

    Docker waits 0.1 s before the first restart and doubles the wait after each crash of a
    container that ran less than 10 s; what that does to the VIP is the figure. Only what must
    hold is asserted by the tests: one holder at the end and the service recovered."""
    lab.wait_steady()
    holder = one_holder(lab)
    node = lab.nodes[holder]
    t0 = time.monotonic()
    crashed = []
    for i in range(CRASHES):
        time.sleep(max(0.0, t0 + i * CRASH_SPAN / CRASHES - time.monotonic()))
        deadline = time.monotonic() + 5
        while not node.daemons.haproxy.running and time.monotonic() < deadline:
            time.sleep(0.02)
        node.crash(HAPROXY_CONTAINER)
        crashed.append(time.monotonic() - t0)
    t1 = _settle(lab, crashed[-1] + t0)
    result = drill_result(lab, "crash-loop", t0, t1, holder)
    result.notes.append(
        f"crashes at {', '.join(f'{c:.1f}' for c in crashed)} s; " + _restarts(lab, holder, HAPROXY_CONTAINER, t0)
    )
    lab.wait_steady()
    return result


def node_reboot(lab: Lab, down: float = 1.0) -> DrillResult:
    """Hard reset of the VIP holder (every process of the node at once, the VIP with them), then
    a boot: network, engine, containers by Docker's restart policy, apiserver. Another node must
    take the VIP and keep it: the rebooted node comes back as BACKUP (nopreempt)."""
    lab.wait_steady()
    holder = one_holder(lab)
    node = lab.nodes[holder]
    t0 = time.monotonic()
    lab.power_off(holder)
    t1 = _settle(lab, t0, lambda h: len(h) == 1 and h[0] != holder)
    off = _window(lab, t0, t1)
    time.sleep(max(0.0, t0 + down - time.monotonic()))
    t2 = time.monotonic()
    lab.power_on(holder)
    booted = time.monotonic()
    deadline = booted + 30
    while not all(c.running for c in node.daemons.containers) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Watched from when its containers run: a boot slower than SETTLE_MIN would otherwise end the
    # watch before the booted keepalived has said which state it entered.
    t3 = _settle(lab, time.monotonic())
    result = drill_result(lab, "node-reboot", t0, t3, holder, window=off)
    result.second = _window(lab, t2, t3)
    starts = sorted(
        (e.t, c.name) for c in node.daemons.containers for e in c.history if e.t >= t2 and e.action == "start"
    )
    result.notes.append(
        f"{holder} off for {t2 - t0:.1f} s; engine answered {booted - t2:.1f} s after power-on; "
        + ", ".join(f"{name} started at +{t - t2:.1f} s" for t, name in starts)
        + "; 'second' is the boot"
    )
    lab.wait_steady()
    return result


def _first_start(lab: Lab, container: str, t: float) -> float | None:
    """When the first node's `container` started at or after t (Docker's start event)."""
    starts = [
        e.t
        for n in lab.nodes.values()
        for e in n.daemons.container(container).history
        if e.t >= t and e.action == "start"
    ]
    return min(starts, default=None)


COLD_START_SEED = 7


def _cold_start(lab: Lab, name: str, stagger: float) -> DrillResult:
    """Every node loses power at once, then boots, all together or each after a random delay of
    0 to `stagger` seconds (seeded). Figures: the client served again counted from the first
    haproxy's start (the goal: within 3 s), VIP moves after the first holder, two holders at once."""
    lab.wait_steady()
    before = one_holder(lab)
    for node in lab.nodes:
        lab.power_off(node)
    time.sleep(1.0)
    rng = random.Random(COLD_START_SEED)
    delays = {node: rng.uniform(0, stagger) for node in lab.nodes}
    t0 = time.monotonic()
    with HolderLog(lab) as log:
        threads = []
        for node, delay in delays.items():

            def boot(node=node, delay=delay) -> None:
                time.sleep(delay)
                lab.power_on(node)

            threads.append(threading.Thread(target=boot, name=f"boot-{node}"))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        t1 = _settle(lab, t0)
    result = drill_result(lab, name, t0, t1, before)
    first_proxy = _first_start(lab, HAPROXY_CONTAINER, t0)
    served = next((a.start for a in lab.client.between(t0, t1) if a.ok), None)
    if first_proxy is not None and served is not None:
        result.served_after_s = max(0.0, served - first_proxy)
    first = next((h[0] for h in log.samples if len(h) == 1), None)
    result.vip_moves = vip_moves(log.samples, first)
    result.double_holder_s = log.longest_double()
    result.notes.append(
        ", ".join(f"{n} booted at +{d:.1f} s" for n, d in sorted(delays.items(), key=lambda kv: kv[1]))
        + (f"; first haproxy at +{first_proxy - t0:.1f} s" if first_proxy else "")
    )
    lab.wait_steady(timeout=60)
    return result


def cold_start(lab: Lab) -> DrillResult:
    """Power cut: every node off at once, then all boot at once."""
    return _cold_start(lab, "cold-start", 0.0)


def cold_start_staggered(lab: Lab) -> DrillResult:
    """Power cut, then the nodes boot 0 to 5 s apart."""
    return _cold_start(lab, "cold-start-staggered", 5.0)


def reboot_each(lab: Lab, down: float = 1.0) -> DrillResult:
    """Reboot every node in turn (backups first, the holder last, as a maintenance would), each
    once the lab is steady again: each reboot may move the VIP at most once (the holder's)."""
    lab.wait_steady()
    before = one_holder(lab)
    order = sorted(lab.nodes, key=lambda n: n == before)
    t0 = time.monotonic()
    moves = []
    for node in order:
        lab.wait_steady(timeout=60)
        with HolderLog(lab) as log:
            start = one_holder(lab)
            lab.reboot(node, down)
            _settle(lab, time.monotonic())
            lab.wait_steady(timeout=60)
        moves.append(vip_moves(log.samples, start))
    t1 = time.monotonic()
    result = drill_result(lab, "reboot-each", t0, t1, before)
    result.vip_moves = max(moves)
    result.notes.append("VIP moves per reboot: " + ", ".join(f"{n} {m}" for n, m in zip(order, moves, strict=True)))
    return result


def make_holder(lab: Lab, node: str) -> None:
    """Move the VIP to `node` by killing haproxy wherever else it is (and bringing it back)."""
    for _ in range(len(lab.nodes)):
        lab.wait_steady()
        holder = one_holder(lab)
        if holder == node:
            return
        _move_vip_away(lab, holder)
        lab.nodes[holder].start_container(HAPROXY_CONTAINER)
    raise AssertionError(f"could not move the VIP to {node}")


def node_cut(lab: Lab) -> DrillResult:
    """Cut the holder off the network (its NIC stays up), then heal: one holder must remain.

    The holder cut is always the node with the highest keepalived priority, the one that would
    win an election on the heal: reaching neither peer nor gateway, it must give up its copy of
    the VIP in its island, so that the heal moves nothing (`vip_moves`)."""
    top = max(lab.nodes, key=lambda n: lab.priority[n])
    make_holder(lab, top)  # returns with the lab steady
    holder = one_holder(lab)
    t0 = time.monotonic()
    lab.topology.cut(holder)
    # While cut, the node may still hold the VIP on its own interface: only the others count.
    _settle(lab, t0, lambda h: len([n for n in h if n != holder]) == 1)
    stepped_down = _wait_for(lambda: holder not in lab.holders(), t0 + CUT_MAX)
    during = [n for n in lab.holders() if n != holder]
    t2 = time.monotonic()
    cut = _window(lab, t0, t2)
    with HolderLog(lab) as log:
        lab.topology.cut(holder, False)
        t3 = _settle(lab, t2)
    result = drill_result(lab, "node-cut", t0, t3, holder, window=cut)
    result.second = _window(lab, t2, t3)
    result.vip_moves = vip_moves(log.samples, during[0] if len(during) == 1 else None)
    result.notes.append(
        f"VIP while cut: {during}; the cut node {'gave up' if stepped_down else 'kept'} its copy; 'second' is the heal"
    )
    lab.wait_steady()
    return result


def peers_cut(lab: Lab) -> DrillResult:
    """Cut every node but the lowest in priority off the network, the holder among them, then heal.

    The survivor still reaches the gateway: it must take the VIP and keep it. The cut nodes reach
    nothing: they must give up their copies, so that the heal moves nothing."""
    top = max(lab.nodes, key=lambda n: lab.priority[n])
    survivor = min(lab.nodes, key=lambda n: lab.priority[n])
    make_holder(lab, top)
    holder = one_holder(lab)
    cut = [n for n in lab.nodes if n != survivor]
    t0 = time.monotonic()
    for node in cut:
        lab.topology.cut(node)
    _settle(lab, t0, lambda h: survivor in h)
    _wait_for(lambda: lab.holders() == [survivor], t0 + CUT_MAX)
    during = lab.holders()
    t2 = time.monotonic()
    window = _window(lab, t0, t2)
    with HolderLog(lab) as log:
        for node in cut:
            lab.topology.cut(node, False)
        t3 = _settle(lab, t2)
    result = drill_result(lab, "peers-cut", t0, t3, holder, window=window)
    result.second = _window(lab, t2, t3)
    result.vip_moves = vip_moves(log.samples, survivor)
    result.notes.append(
        f"{', '.join(cut)} cut, {survivor} reaches the gateway; VIP while cut: {during}; 'second' is the heal"
    )
    lab.wait_steady()
    return result


GATEWAY_DOWN_S = 4.0  # longer than the network check needs to fail twice


def gateway_down(lab: Lab) -> DrillResult:
    """Take the subnet gateway down while every node is fine: the nodes still reach each other,
    so nothing may move."""
    lab.wait_steady()
    holder = one_holder(lab)
    t0 = time.monotonic()
    with HolderLog(lab) as log:
        lab.topology.gateway_down()
        time.sleep(GATEWAY_DOWN_S)
        lab.topology.gateway_down(False)
        t1 = _settle(lab, t0)
    result = drill_result(lab, "gateway-down", t0, t1, holder)
    result.vip_moves = vip_moves(log.samples, holder)
    gateway = lab.topology.gateway
    result.notes.append(f"gateway {gateway.address if gateway else '(none)'} down for {GATEWAY_DOWN_S} s")
    lab.wait_steady()
    return result


def _detection(lab: Lab, result: DrillResult, holder: str, t0: float, t1: float) -> None:
    """Detection = the holder's haproxy logs the backend DOWN; and the failures after it."""
    down = lab.nodes[holder].daemons.first_event("haproxy", rf"/{holder} is DOWN", t0)
    if down is not None:
        result.detection_s = down.t - t0
    else:  # haproxy logged nothing: take the time failures stopped
        failures = [a for a in lab.client.between(t0, t1) if not a.ok]
        result.detection_s = max((a.end for a in failures), default=t0) - t0
        result.notes.append("detection from the client's last failure (no DOWN line in haproxy's log)")
    result.failed_after_detection = sum(
        1 for a in lab.client.between(t0, t1) if not a.ok and a.start >= t0 + result.detection_s
    )


def _backend_fault(
    lab: Lab, name: str, inject: Callable[[LabNode], object], restore: Callable[[LabNode], object]
) -> DrillResult:
    """A fault of the holder's apiserver; detection = holder's haproxy logs the backend DOWN."""
    lab.wait_steady()
    holder = one_holder(lab)
    node = lab.nodes[holder]
    t0 = time.monotonic()
    inject(node)
    t1 = _settle(lab, t0)
    result = drill_result(lab, name, t0, t1, holder)
    _detection(lab, result, holder, t0, t1)
    restore(node)
    lab.wait_steady()
    return result


def apiserver_stop(lab: Lab) -> DrillResult:
    """The holder's apiserver dies (SIGKILL: nothing drains): haproxy must send clients elsewhere."""
    return _backend_fault(lab, "apiserver-stop", lambda n: n.kill_apiserver(), lambda n: n.apiserver.start())


def apiserver_unhealthy(lab: Lab) -> DrillResult:
    """Make the holder's apiserver answer /readyz and /healthz with 500 while it keeps running."""
    return _backend_fault(lab, "apiserver-unhealthy", lambda n: n.set_healthy(False), lambda n: n.set_healthy(True))


DRAIN_MAX = 30.0  # the stand-in's shutdown delay, then the requests in flight (5 s at most each)


def drain(lab: Lab, name: str) -> DrillResult:
    """SIGTERM to the holder's apiserver, then watch from its exit on as any fault is watched."""
    lab.wait_steady()
    holder = one_holder(lab)
    node = lab.nodes[holder]
    t0 = time.monotonic()
    node.drain_apiserver()
    exited = _wait_for(lambda: not node.apiserver.running, t0 + DRAIN_MAX)
    t_exit = time.monotonic()
    t1 = _settle(lab, t_exit)
    result = drill_result(lab, name, t0, t1, holder)
    _detection(lab, result, holder, t0, t1)
    closed = node.apiserver_said(apiserver.NOT_ACCEPTING, t0)
    result.not_accepting_s = None if closed is None else closed - t0
    answered = [a.start - t0 for a in lab.client.between(t0, t1) if a.ok and a.node == holder and a.start >= t0]
    result.last_served_s = max(answered, default=None)
    state = "exited" if exited else "was still running"
    result.notes.append(
        f"{holder}'s apiserver {state} {t_exit - t0:.1f} s after SIGTERM; it answered {len(answered)} "
        f"attempts started after SIGTERM"
    )
    node.kill_apiserver()  # reaps it (or ends it, had it not exited)
    node.apiserver.start()
    lab.wait_steady()
    if not exited:
        raise AssertionError(
            f"{holder}'s apiserver did not exit within {DRAIN_MAX} s of SIGTERM (log: {node.apiserver.log})"
        )
    return result


def apiserver_drain(lab: Lab) -> DrillResult:
    """The holder's apiserver stopped gracefully (SIGTERM, as kubelet stops kube-apiserver for an
    upgrade): /readyz fails at once, it serves on for its shutdown delay, then stops accepting and
    exits. haproxy must have taken it out of rotation before it stops accepting: nothing fails."""
    return drain(lab, "apiserver-drain")
