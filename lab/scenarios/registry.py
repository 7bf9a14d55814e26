"""Every scenario the lab plays, listed once: its name, kind, title, goal and function.

The command line (`python -m lab drill NAME`), the benchmark (`python -m lab.bench`: the drills it
runs, each table's title and goal) and the tests read this list: adding a drill is one entry here.
The goals are the issue's targets, printed next to the figures and never asserted.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lab.scenarios import controls, drills, operate


class Kind(enum.Enum):
    DRILL = "drill"  # on a steady lab, which it leaves steady: run(lab) -> DrillResult
    CONTROL = "control"  # a negative control on a lab of its own: run(doc, variant) -> DrillResult
    OPERATOR = "operator"  # the operator's tool from the admin network (lab.scenarios.operate)


DRILL, CONTROL, OPERATOR = Kind.DRILL, Kind.CONTROL, Kind.OPERATOR


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Kind
    title: str
    goal: str
    run: Callable[..., Any]  # by kind: (lab) or (doc, variant) -> DrillResult; the operator's: see operate


def index(entries: Iterable[Entry]) -> dict[str, Entry]:
    """The entries by name; a repeated name, or an entry without a title or a goal, is an error."""
    out: dict[str, Entry] = {}
    for e in entries:
        if e.name in out:
            raise ValueError(f"scenario {e.name!r}: registered twice")
        for what in ("title", "goal"):
            if not getattr(e, what).strip():
                raise ValueError(f"scenario {e.name!r}: no {what}; the benchmark prints one for every scenario")
        out[e.name] = e
    return out


ENTRIES: dict[str, Entry] = index(
    [
        Entry(
            "haproxy-kill",
            DRILL,
            "haproxy crashes on the VIP holder (SIGKILL; Docker restarts it)",
            "ours: median <= 0.1 s, max <= 0.2 s, <= 1 attempt > 0.5 s per run",
            drills.haproxy_kill,
        ),
        Entry(
            "haproxy-stop",
            DRILL,
            "docker stop haproxy on the VIP holder (stays down)",
            "ours: median <= 0.5 s, max <= 1.2 s, >= 5x better than seed",
            drills.haproxy_stop,
        ),
        Entry(
            "haproxy-recover",
            DRILL,
            "docker start the stopped haproxy (the VIP must stay)",
            "ours: 0 s",
            drills.haproxy_recover,
        ),
        Entry(
            "keepalived-kill",
            DRILL,
            "keepalived crashes on the holder (SIGKILL; Docker restarts it)",
            "ours: median <= 0.5 s",
            drills.keepalived_kill,
        ),
        Entry(
            "node-cut",
            DRILL,
            "cut the holder off the network, then heal",
            "ours: median <= 0.5 s; one holder and 0 VIP moves after heal",
            drills.node_cut,
        ),
        Entry(
            "peers-cut",
            DRILL,
            "cut the holder and the other peer off: the last node still reaching the gateway, then heal",
            "ours: the survivor holds the VIP; 0 VIP moves after heal",
            drills.peers_cut,
        ),
        Entry(
            "gateway-down",
            DRILL,
            "the subnet gateway goes down, every node fine",
            "0 failed, 0 VIP moves",
            drills.gateway_down,
        ),
        Entry(
            "crash-loop",
            DRILL,
            "haproxy on the holder crashes 5 times in 10 s (Docker's restart back-off)",
            "one holder at the end, served again",
            drills.crash_loop,
        ),
        Entry(
            "node-reboot",
            DRILL,
            "hard reset of the holder, then boot (engine, containers by restart policy, apiserver)",
            "one holder, at most one VIP move, served again after the boot",
            drills.node_reboot,
        ),
        Entry(
            "reboot-each",
            DRILL,
            "reboot every node in turn, the holder last",
            "at most 1 VIP move per reboot",
            drills.reboot_each,
        ),
        Entry(
            "cold-start",
            DRILL,
            "power cut: every node off, then all boot at once",
            "one holder; served within 3 s of the first haproxy's start",
            drills.cold_start,
        ),
        Entry(
            "cold-start-staggered",
            DRILL,
            "power cut, then the nodes boot 0 to 5 s apart",
            "one holder; served within 3 s of the first haproxy's start",
            drills.cold_start_staggered,
        ),
        Entry(
            "apiserver-stop",
            DRILL,
            "the holder's apiserver dies (SIGKILL)",
            "0 failed connections after haproxy's detection",
            drills.apiserver_stop,
        ),
        Entry(
            "apiserver-unhealthy",
            DRILL,
            "the holder's apiserver answers /readyz and /healthz with 500",
            "0 failed connections after haproxy's detection",
            drills.apiserver_unhealthy,
        ),
        Entry(
            "apiserver-drain",
            DRILL,
            "the holder's apiserver stopped gracefully (SIGTERM: /readyz fails, serves for its shutdown delay, exits)",
            "0 failed; haproxy marks it DOWN before it stops accepting",
            drills.apiserver_drain,
        ),
        Entry(
            "no-vrrp-rule",
            CONTROL,
            "negative control: VRRP rule removed from the JSON",
            "must break: more than one holder",
            controls.without_vrrp_rule,
        ),
        Entry(
            "no-vip-pair",
            CONTROL,
            "negative control: VIP removed from allowed_address_pairs",
            "must break: client cannot reach the VIP",
            controls.without_vip_pair,
        ),
        Entry(
            "haproxy-network-none",
            CONTROL,
            "negative control: haproxy's docker run line says --network none",
            "must break: no holder (every check fails)",
            controls.haproxy_network_none,
        ),
        Entry(
            "keepalived-no-net-admin",
            CONTROL,
            "negative control: keepalived's docker run line lacks --cap-add NET_ADMIN",
            "must break: no holder (the VIP cannot be added)",
            controls.keepalived_without_net_admin,
        ),
        Entry(
            "apiserver-drain-healthz",
            CONTROL,
            "negative control: apiserver-drain with haproxy checking /healthz (kubeadm's recipe)",
            "must break: haproxy marks it DOWN only after it stopped accepting",
            controls.apiserver_drain_healthz,
        ),
        Entry(
            "roll-config",
            OPERATOR,
            "roll a config-only change: reloads only",
            "0 failed, 0 VIP moves, status 0 after",
            operate.config_roll,
        ),
        Entry(
            "roll-image",
            OPERATOR,
            "roll an image change: containers recreated, the holder's after a hand-over",
            "exactly 1 VIP move, outage median <= 0.3 s, 0 failed outside the hand-over, status 0 after",
            operate.image_roll,
        ),
        Entry(
            "roll-refused",
            OPERATOR,
            "roll a haproxy.cfg that does not parse: refused before any node changes",
            "exit 3 (stopped) before any change, 0 failed, message names node, file and haproxy's error",
            operate.refused_roll,
        ),
        Entry(
            "roll-unreachable",
            OPERATOR,
            "the plan's second node stops answering SSH once the roll has validated every node",
            "exit 3 (stopped) at the 2nd node, 1 node changed, later nodes untouched; a 2nd roll finishes",
            operate.unreachable_mid_roll,
        ),
        Entry(
            "status",
            OPERATOR,
            "status: one fault at a time",
            "exit 1 (unhealthy) with the fault's findings, by kind, and no other; exit 0 once put back",
            operate.status_drill,
        ),
    ]
)


def of(*kinds: Kind) -> dict[str, Entry]:
    """The entries of these kinds, in the registry's order (the benchmark's)."""
    return {name: e for name, e in ENTRIES.items() if e.kind in kinds}


#: what `python -m lab drill` and `python -m lab.bench --drills` offer: the drills on a lab's own
LAB_DRILLS = of(DRILL, CONTROL)
