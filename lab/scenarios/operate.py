"""Drills of the operator's tool: `python -m ops roll` and `status` run from the admin namespace,
over SSH, against the lab under its open-loop client, the way an operator runs them.

Tests and the benchmark run the same functions. A roll drill starts from a steady lab and rolls
its nodes to the JSON `target` (each change is made on a copy of the JSON: an edited line of a
file, or a config synthesized again); the lab itself checks what the tool claims:
which nodes' files and containers changed (`fingerprints`), how many times the VIP moved (MASTER
entries in keepalived's logs), what the client saw, and whether `status` against the target
finds the nodes healthy afterwards. A status drill injects one fault, runs `status --json`, and
compares its findings, by kind, node, subject and detail (`finding_details`), with the ones the
fault must produce (and may produce), then puts the lab back and checks that `status` exits 0 again.

Outage of a roll: from the moment the old holder's keepalived is stopped (Docker's kill event:
the hand-over) to the start of the first served attempt after the last failed one of that
window; failed attempts outside [hand-over - client timeout, hand-over + outage] are counted
apart, as failures the roll should not cause.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lab.scenarios import variants
from lab.scenarios.drills import Window, one_holder
from lab.world import images, synth, topology
from lab.world.admin import ROOT, Operator
from lab.world.client import TIMEOUT
from lab.world.harness import Lab, synthesize_config
from ops.status import FindingKind
from userdata.render import HAPROXY_CFG, HAPROXY_CONTAINER, KEEPALIVED_CONF, KEEPALIVED_CONTAINER

CONFIG_DIR = str(Path(HAPROXY_CFG.host_path).parent.parent)  # /etc/kubeadm-ha, every file the userdata writes
STEADY_TIMEOUT = 60.0
_PLAN_LINE = re.compile(r"^\s+(\d+)\. (\S+) \(")  # "  2. demo-cp-3 (backup): ..."


# --- the changes the drills roll ---------------------------------------------------------------
# host paths (userdata.render's HAPROXY_CFG and KEEPALIVED_CONF are the files themselves)
HAPROXY_CFG_PATH = HAPROXY_CFG.host_path
KEEPALIVED_CONF_PATH = KEEPALIVED_CONF.host_path
IMAGE_BUMP = "-lab1"


def default_config() -> Path:
    """The YAML the lab's JSON was synthesized from, as for `make synth`."""
    return Path(os.environ.get("CONFIG") or ROOT / "config" / "example.yaml")


def config_change(doc: dict) -> dict:
    """A config-only change of both daemons, as an edited template makes it: one haproxy timeout
    and one keepalived setting."""
    doc = variants.with_file_line(doc, HAPROXY_CFG_PATH, "timeout client-fin 10s", "timeout client-fin 11s")
    return variants.with_file_line(
        doc, KEEPALIVED_CONF_PATH, "vrrp_garp_master_refresh 1", "vrrp_garp_master_refresh 2"
    )


def broken_haproxy_cfg(doc: dict) -> dict:
    """A haproxy.cfg with a typo that `haproxy -c` refuses."""
    return variants.with_file_line(doc, HAPROXY_CFG_PATH, "timeout client-fin 10s", "timeout clientfin 10s")


def five_nodes(config: dict) -> dict:
    """The config with five members, addresses after the VIP's."""
    out = copy.deepcopy(config)
    prefix, last = out["vip"]["address"].rsplit(".", 1)
    out["nodes"]["count"] = 5
    out["nodes"]["members"] = [
        {"name": f"{out['name']}-cp-{i}", "address": f"{prefix}.{int(last) + i}"} for i in range(1, 6)
    ]
    return out


def with_images(config: dict, bump: str = IMAGE_BUMP) -> dict:
    """The config with every image reference re-tagged `<tag><bump>`: an image change."""
    out = copy.deepcopy(config)
    out["containers"] = {name: f"{ref}{bump}" for name, ref in out["containers"].items()}
    return out


def image_change(lab: Lab, config: Path, outdir: Path) -> dict:
    """The JSON of `config` with its images re-tagged, synthesized, and those images on every node
    (`images.derive`: the same stand-ins under the new tags)."""
    data = yaml.safe_load(config.read_text())
    _, stack = synthesize_config(with_images(data), outdir)
    for old, new in zip(data["containers"].values(), with_images(data)["containers"].values(), strict=True):
        for node in lab.nodes.values():
            images.derive(node.engine, old, new, lab.workdir)
    return synth.load(stack)


def fingerprints(lab: Lab) -> dict[str, str]:
    """Per node: the sha256 of every file under /etc/kubeadm-ha and each container's id and start
    time, read by the lab itself (not over SSH): what a roll may change."""
    script = (
        f"find {CONFIG_DIR} -type f | sort | xargs sha256sum; "
        "docker inspect --format '{{.Name}} {{.Id}} {{.State.StartedAt}}' "
        f"{HAPROXY_CONTAINER} {KEEPALIVED_CONTAINER}"
    )
    return {name: node.engine.run(["sh", "-c", script]).stdout for name, node in lab.nodes.items()}


def _masters(lab: Lab, t0: float, t1: float) -> int:
    return sum(len(n.daemons.events_between("keepalived", "Entering MASTER STATE", t0, t1)) for n in lab.nodes.values())


@dataclass
class RollResult:
    drill: str
    nodes: int
    returncode: int
    took_s: float  # the tool's run, plan to last health gate
    failed: int  # client attempts that failed during the roll
    outage_s: float  # the hand-over's, 0 without one
    failed_outside_handover: int
    slowest_s: float | None
    vip_moves: int  # "Entering MASTER STATE", all nodes
    holder_before: str
    holder_after: str | None
    holders_at_end: int
    order: list[str]  # the plan's order, as the tool printed it
    changed: list[str]  # nodes whose files or containers the lab saw change
    status_after: int | None  # `status` against the target once the lab is steady again
    message: str  # the tool's error output
    output: str  # everything the tool printed
    notes: list[str] = field(default_factory=list)


def roll(
    lab: Lab,
    op: Operator,
    name: str,
    target: Path,
    *,
    on_line: Callable[[float, str, str], None] | None = None,
    steady: bool = True,
    status_against: Path | None = None,
) -> RollResult:
    """Roll the lab's nodes to `target` and measure it. `steady`: the roll must leave the lab in
    its steady state (False where it stops half-way on purpose); `status` then runs against
    `status_against` (default: the target)."""
    lab.wait_steady()
    holder = one_holder(lab)
    before = fingerprints(lab)
    t0 = time.monotonic()
    run = op.run("roll", target, on_line=on_line)
    if steady:
        lab.wait_steady(STEADY_TIMEOUT)
    t1 = time.monotonic()
    time.sleep(TIMEOUT + 0.1)  # let attempts in flight report
    attempts = lab.client.between(t0, t1)
    kills = [e.t for e in lab.nodes[holder].daemons.keepalived.history if e.action == "kill" and t0 <= e.t <= t1]
    t_handover = kills[0] if kills else None
    if t_handover is None:  # every failure is one the roll should not cause
        window = Window.of(attempts, t0, t1)
        outage, outside = window.outage_s, window.failed
    else:
        window = Window.of([a for a in attempts if a.end >= t_handover], t_handover, t1)
        outage = window.outage_s
        outside = sum(1 for a in attempts if not a.ok and not t_handover - TIMEOUT <= a.start <= t_handover + outage)
    after = fingerprints(lab)
    holders = lab.holders()
    status = op.run("status", status_against or target).returncode if steady else None
    result = RollResult(
        drill=name,
        nodes=len(lab.nodes),
        returncode=run.returncode,
        took_s=run.took_s,
        failed=sum(1 for a in attempts if not a.ok),
        outage_s=outage,
        failed_outside_handover=outside,
        slowest_s=max((a.end - a.start for a in attempts), default=None),
        vip_moves=_masters(lab, t0, t1),
        holder_before=holder,
        holder_after=holders[0] if len(holders) == 1 else None,
        holders_at_end=len(holders),
        order=[m.group(2) for line in run.stdout.splitlines() if (m := _PLAN_LINE.match(line))],
        changed=[n for n in lab.nodes if before[n] != after[n]],
        status_after=status,
        message=run.stderr.strip(),
        output=run.output,
    )
    if t_handover is None and result.failed:
        result.notes.append("failures without a hand-over: outage counted from the roll's start")
    return result


def config_roll(lab: Lab, op: Operator, target: Path) -> RollResult:
    """(a) A config-only change: reloads only; no failed request, no VIP move, no drift after."""
    return roll(lab, op, "roll-config", target)


def image_roll(lab: Lab, op: Operator, target: Path) -> RollResult:
    """(b) An image change: containers recreated from the userdata's lines, the holder's after a
    hand-over: exactly one VIP move."""
    return roll(lab, op, "roll-image", target)


def refused_roll(lab: Lab, op: Operator, target: Path, current: Path) -> RollResult:
    """(c) A haproxy.cfg that does not parse: refused before any node changes (status against
    `current`, what the nodes ran before, must still find them healthy)."""
    return roll(lab, op, "roll-refused", target, status_against=current)


def unreachable_mid_roll(lab: Lab, op: Operator, target: Path) -> RollResult:
    """(d) The second node of the plan stops answering SSH (its sshd is stopped) once the tool has
    validated every node: the roll must change the first node, stop at the second, name it and
    leave it and the nodes after it untouched. Its sshd is started again afterwards; the nodes
    are then half rolled, as the tool left them."""
    order: dict[int, str] = {}
    cut: list[str] = []

    def on_line(_t: float, _stream: str, text: str) -> None:
        if m := _PLAN_LINE.match(text):
            order[int(m.group(1))] = m.group(2)
        elif text.startswith("validated the new files") and not cut and 2 in order:
            cut.append(order[2])
            lab.nodes[order[2]].sshd.stop()

    try:
        result = roll(lab, op, "roll-unreachable", target, on_line=on_line, steady=False)
    finally:
        for name in cut:
            lab.nodes[name].sshd.start()
    result.notes.append(f"sshd stopped on {cut[0] if cut else 'no node'} after validation")
    return result


# --- status ---------------------------------------------------------------------------------------
@dataclass
class StatusResult:
    scenario: str
    returncode: int
    findings: list[str]  # the sentences, as status printed them
    missing: list[str]  # expected findings that status did not report
    unexpected: list[str]  # findings neither expected nor allowed
    holders: list[str]  # as status reported them
    took_s: float
    healthy_after: int | None  # status's exit once the lab is put back and steady


@dataclass(frozen=True)
class Expect:
    """A finding `status --json` must (or may) report, matched on its data (`finding_details`): its
    kind, the node it names (None: the cluster), and where given its subject, a regular expression
    its detail must match, and how many holders it names."""

    kind: FindingKind
    node: str | None = None
    subject: str | None = None
    detail: str | None = None
    holders: int | None = None

    def matches(self, found: dict) -> bool:
        return (
            found["kind"] == self.kind.value
            and found["node"] == self.node
            and (self.subject is None or found["subject"] == self.subject)
            and (self.detail is None or re.search(self.detail, found["detail"]) is not None)
            and (self.holders is None or len(found.get("holders", ())) == self.holders)
        )

    def __str__(self) -> str:
        given = {"subject": self.subject, "detail": self.detail, "holders": self.holders}
        said = "".join(f" {k}={v!r}" for k, v in given.items() if v is not None)
        return f"{self.kind.value} on {self.node or 'the cluster'}{said}"


@dataclass(frozen=True)
class Scenario:
    """A fault for `status` to find: inject, wait until it shows, the findings it must (and may) cause, put back."""

    inject: Callable[[Lab], str]  # returns the node it concerns
    shows: Callable[[Lab, str], bool]
    expected: Callable[[Lab, str], list[Expect]]  # each must match a finding
    restore: Callable[[Lab, str], None]
    allowed: Callable[[Lab, str], list[Expect]] = lambda lab, node: []


def _a_backup(lab: Lab) -> str:
    holder = one_holder(lab)
    return next(n for n in lab.nodes if n != holder)


def _block_vrrp(lab: Lab, blocked: bool) -> None:
    """Drop VRRP between every pair of ports on the bridge (a table of the drill's own)."""
    rules = (
        [
            "table bridge kha_block_vrrp {",
            "  chain forward {",
            "    type filter hook forward priority -300; policy accept;",
            "    ip protocol 112 drop",
            "  }",
            "}",
        ]
        if blocked
        else ["delete table bridge kha_block_vrrp"]
    )
    topology.run(topology.in_ns(topology.NET_NS, ["nft", "-f", "-"]), input="\n".join(rules) + "\n")


def _two_holders(lab: Lab) -> str:
    _block_vrrp(lab, True)
    return ""  # the fault concerns no one node


def _holder_off(lab: Lab) -> str:
    holder = one_holder(lab)
    lab.power_off(holder)
    return holder


def _keepalived_stopped_everywhere(lab: Lab) -> str:
    for node in lab.nodes.values():
        node.stop_container(KEEPALIVED_CONTAINER)
    return ""


def _keepalived_started_everywhere(lab: Lab, _node: str) -> None:
    for node in lab.nodes.values():
        node.start_container(KEEPALIVED_CONTAINER)


def _stop_haproxy(lab: Lab) -> str:
    node = _a_backup(lab)
    lab.nodes[node].stop_container(HAPROXY_CONTAINER)
    return node


def _stop_apiserver(lab: Lab) -> str:
    node = _a_backup(lab)
    lab.nodes[node].kill_apiserver()
    return node


DRIFTED = HAPROXY_CFG_PATH


def _edit_by_hand(lab: Lab) -> str:
    node = _a_backup(lab)
    lab.nodes[node].engine.run(
        ["sh", "-c", f"cp -p {DRIFTED} /run/kha-drill.bak && echo '# edited by hand' >> {DRIFTED}"]
    )
    return node


def _stop_sshd(lab: Lab) -> str:
    node = _a_backup(lab)
    lab.nodes[node].sshd.stop()
    return node


def _start_apiserver(lab: Lab, node: str) -> None:
    lab.nodes[node].apiserver.start()


def _put_back_by_hand(lab: Lab, node: str) -> None:
    lab.nodes[node].engine.run(["mv", "/run/kha-drill.bak", DRIFTED])


def _apiserver_down(lab: Lab, node: str) -> list[Expect]:
    return [
        Expect(FindingKind.APISERVER_DOWN, n, subject=node, detail=r"^DOWN \(")
        for n in lab.nodes
        if lab.nodes[n].engine.up
    ]


SCENARIOS: dict[str, Scenario] = {
    # the holder is powered off: another node takes the VIP; status cannot reach the dead one
    "holder-killed": Scenario(
        _holder_off,
        lambda lab, node: len(lab.holders()) == 1,
        lambda lab, node: [
            Expect(FindingKind.UNREACHABLE, node, detail=r"^ssh: connect to host \S+ port 22: Connection timed out")
        ],
        lambda lab, node: lab.power_on(node),
        allowed=_apiserver_down,
    ),
    "no-holder": Scenario(
        _keepalived_stopped_everywhere,
        lambda lab, node: not lab.holders(),
        lambda lab, node: (
            [Expect(FindingKind.NO_HOLDER)]
            + [Expect(FindingKind.CONTAINER_STOPPED, n, KEEPALIVED_CONTAINER, r"^exited") for n in lab.nodes]
        ),
        _keepalived_started_everywhere,
    ),
    "two-holders": Scenario(
        _two_holders,
        lambda lab, node: len(lab.holders()) > 1,
        lambda lab, node: [Expect(FindingKind.SEVERAL_HOLDERS, holders=len(lab.holders()))],
        lambda lab, node: _block_vrrp(lab, False),
    ),
    "fault": Scenario(
        _stop_haproxy,
        lambda lab, node: lab.nodes[node].daemons.vrrp_state == "FAULT",
        lambda lab, node: [
            Expect(FindingKind.KEEPALIVED_FAULT, node),
            Expect(FindingKind.CONTAINER_STOPPED, node, HAPROXY_CONTAINER, r"^exited$"),
        ],
        lambda lab, node: lab.nodes[node].start_container(HAPROXY_CONTAINER),
    ),
    "apiserver-down": Scenario(
        _stop_apiserver,
        lambda lab, node: all(node in n.daemons.servers_down for n in lab.nodes.values()),
        _apiserver_down,
        _start_apiserver,
    ),
    "drift": Scenario(
        _edit_by_hand,
        lambda lab, node: True,
        lambda lab, node: [Expect(FindingKind.DRIFT, node, DRIFTED, r"^content differs$")],
        _put_back_by_hand,
    ),
    "unreachable": Scenario(
        _stop_sshd,
        lambda lab, node: True,
        lambda lab, node: [
            Expect(FindingKind.UNREACHABLE, node, detail=r"^ssh: connect to host \S+ port 22: Connection refused$")
        ],
        lambda lab, node: lab.nodes[node].sshd.start(),
    ),
}


def status_drill(lab: Lab, op: Operator, stack: Path, scenario: str, timeout: float = 20.0) -> StatusResult:
    """Inject one fault, run `status --json`, judge its findings, put the lab back."""
    s = SCENARIOS[scenario]
    lab.wait_steady()
    node = s.inject(lab)
    try:
        deadline = time.monotonic() + timeout
        while not s.shows(lab, node):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{scenario}: the fault did not show within {timeout} s")
            time.sleep(0.1)
        expected, allowed = s.expected(lab, node), s.allowed(lab, node)
        run = op.run("status", stack, "--json")
    finally:
        s.restore(lab, node)
    report = json.loads(run.stdout) if run.stdout.strip().startswith("{") else {}
    found = report.get("finding_details", [])
    lab.wait_steady(STEADY_TIMEOUT)
    return StatusResult(
        scenario=scenario,
        returncode=run.returncode,
        findings=report.get("findings", []),
        missing=[str(e) for e in expected if not any(e.matches(f) for f in found)],
        unexpected=[f["message"] for f in found if not any(e.matches(f) for e in expected + allowed)],
        holders=report.get("holders", []),
        took_s=run.took_s,
        healthy_after=op.run("status", stack).returncode,
    )
