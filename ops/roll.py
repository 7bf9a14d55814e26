"""Bring every node to the synthesized userdata, one node at a time, without an outage.

Plan first (which nodes differ, in which files, config-only or container change; backups first, the
VIP holder last), validate every changed node's new files inside its target images before the
first change (all nodes at once: validation changes nothing), then per node: write the files
(renamed into place), reload or recreate, and wait until the node is healthy again before
touching the next one. A container change on the VIP holder
hands the VIP over first: `docker stop keepalived` makes a MASTER send priority 0, and a backup
takes over within a few advert intervals.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from ops import GATE_TIMEOUT_S, HANDOVER_TIMEOUT_S, POLL_S
from ops.docker import check_argv
from ops.inventory import Inventory
from ops.remote import NodeReport, Script, failed_write, parse_addresses, sections, steps
from ops.ssh import Result, Ssh
from ops.status import Drift, DriftKind, FindingKind, NodeStatus, diff, fetch, findings, holders
from userdata.cloudconfig import WrittenFile
from userdata.render import CONTAINERS, HAPROXY_CFG, KEEPALIVED_CONF
from userdata.render import HAPROXY_CONTAINER as HAPROXY
from userdata.render import KEEPALIVED_CONTAINER as KEEPALIVED
from userdata.stack import Node

# keepalived 2.2.7 (Debian) ends `-t` by SIGTERM-ing itself: 143 is `docker run`'s status for that.
KEEPALIVED_TEST_OK = (0, 143)


class StopKind(StrEnum):
    """Why the roll stopped; `roll --json` names it (`stopped.kind`)."""

    UNREACHABLE = "unreachable"  # a node did not answer SSH (before the roll, or at its turn)
    NOT_ONE_HOLDER = "not_one_holder"  # the VIP has no holder or several: the roll does not start
    VALIDATION_FAILED = "validation_failed"  # a new file refused in its target image: nothing changed
    STEP_FAILED = "step_failed"  # a command of the change failed on the node
    NO_HANDOVER = "no_handover"  # no other node took the VIP from the holder
    UNHEALTHY = "unhealthy"  # the node did not pass its health gate in time


class RollStopped(Exception):
    """The roll stopped; the message names the node and what is wrong, the fields say it as data."""

    def __init__(
        self,
        message: str,
        kind: StopKind,
        node: str | None = None,
        detail: str = "",
        rolled: tuple[str, ...] = (),
        not_rolled: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind, self.node, self.detail = kind, node, detail
        self.rolled, self.not_rolled = rolled, not_rolled

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "node": self.node,
            "detail": self.detail,
            "rolled": list(self.rolled),
            "not_rolled": list(self.not_rolled),
            "message": str(self),
        }


class ChangeKind(StrEnum):
    CONFIG_ONLY = "config-only"
    IMAGE = "image change"
    CONTAINER = "container change"


@dataclass(frozen=True)
class NodeChange:
    node: Node
    files: tuple[tuple[WrittenFile, Drift], ...]
    containers: tuple[tuple[str, Drift], ...]  # (container, why it is recreated)
    holder: bool

    @property
    def recreate(self) -> tuple[str, ...]:
        return tuple(name for name in CONTAINERS if name in dict(self.containers))

    @property
    def kind(self) -> ChangeKind:
        if not self.containers:
            return ChangeKind.CONFIG_ONLY
        if any(d.kind is DriftKind.CONTAINER_IMAGE for _, d in self.containers):
            return ChangeKind.IMAGE
        return ChangeKind.CONTAINER

    @property
    def hands_over(self) -> bool:
        return self.holder and bool(self.containers)

    @property
    def reloads(self) -> tuple[str, ...]:
        """Containers that read a changed file and are neither recreated nor restarted."""
        out = []
        for name in CONTAINERS:
            if name in self.recreate or (name == KEEPALIVED and self.hands_over):
                continue
            folders = [host for host, _, _ in self.node.run(name).mounts()]
            if any(f.path.startswith(tuple(d + "/" for d in folders)) for f, _ in self.files):
                out.append(name)
        return tuple(out)


@dataclass(frozen=True)
class RollPlan:
    holder: str
    changes: tuple[NodeChange, ...]
    unchanged: tuple[str, ...]


def make_roll_plan(inv: Inventory, statuses: list[NodeStatus]) -> RollPlan:
    """The changes, backups first; RollStopped when a node is unreachable or the VIP has not exactly one holder."""
    found = findings(inv, statuses)
    unreachable = [f for f in found if f.kind is FindingKind.UNREACHABLE]
    if unreachable:
        f = unreachable[0]
        raise RollStopped(
            f"cannot roll: {f.node} is unreachable over SSH ({f.detail}); nothing was changed",
            StopKind.UNREACHABLE,
            f.node,
            f.detail,
        )
    for f in found:
        if f.kind in (FindingKind.NO_HOLDER, FindingKind.SEVERAL_HOLDERS):
            who = ", ".join(f.holders) or "no node"
            raise RollStopped(
                f"cannot roll: the VIP {inv.vip} must have exactly one holder, it has {who}; nothing was changed",
                StopKind.NOT_ONE_HOLDER,
                detail=who,
            )
    [holder] = holders(inv, statuses)
    changes, unchanged = [], []
    for s in statuses:
        assert s.report is not None
        d = diff(s.node, s.report)
        if d.empty:
            unchanged.append(s.node.name)
        else:
            changes.append(NodeChange(s.node, d.files, d.containers, s.node.name == holder))
    ordered = sorted(changes, key=lambda c: c.holder)  # stable: backups in node order, the holder last
    return RollPlan(holder, tuple(ordered), tuple(unchanged))


def describe(plan: RollPlan) -> list[str]:
    if not plan.changes:
        return ["every node matches the synthesized userdata: nothing to roll"]
    lines = [
        f"roll plan ({len(plan.changes)} of {len(plan.changes) + len(plan.unchanged)} nodes; "
        f"VIP holder: {plan.holder}):"
    ]
    for i, c in enumerate(plan.changes, 1):
        role = "VIP holder, last" if c.holder else "backup"
        actions = [f"recreate {n}" for n in c.recreate] + [f"reload {n}" for n in c.reloads]
        if c.hands_over:
            actions.insert(0, "hand the VIP over (docker stop keepalived)")
            if KEEPALIVED not in c.recreate:
                actions.append("start keepalived")
        lines.append(f"  {i}. {c.node.name} ({role}): {c.kind}: {', '.join(actions) or 'write files only'}")
        lines += [f"       file {d.what}: {d.why}" for _, d in c.files]
        lines += [f"       {d.what}: {d.why}" for _, d in c.containers]
    if plan.unchanged:
        lines.append(f"  unchanged: {', '.join(plan.unchanged)}")
    return lines


def _first_lines(text: str, keep: str | None = None, limit: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if keep:
        lines = [line for line in lines if keep in line] or lines
    return " | ".join(lines[:limit]) or "(no output)"


class Roller:
    def __init__(
        self,
        inv: Inventory,
        ssh: Ssh,
        *,
        say: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        gate_timeout: float = GATE_TIMEOUT_S,
        handover_timeout: float = HANDOVER_TIMEOUT_S,
    ) -> None:
        self.inv, self.ssh, self.say, self.sleep, self.clock = inv, ssh, say, sleep, clock
        self.gate_timeout, self.handover_timeout = gate_timeout, handover_timeout

    # --- Validation: before any change, on every node that changes.

    def validation_script(self, node: Node) -> Script:
        stage = f"/tmp/kubeadm-ha-validate.{secrets.token_hex(8)}"
        script = Script()
        script.lines.append(f"trap {shlex.quote('rm -rf ' + shlex.quote(stage))} EXIT")
        for run in node.runs:
            script.step(f"image-{run.name}", "kha_image", run.image)
        script.step("stage", "mkdir", "-m", "0755", stage)
        for f in node.files:
            script.put(stage + f.path, f.owner, f.permissions, f.content)
        staged = {host: stage + host for run in node.runs for host, _, _ in run.mounts()}
        haproxy, keepalived = node.run(HAPROXY), node.run(KEEPALIVED)
        script.call(
            "kha_step", "haproxy-check", *check_argv(haproxy, staged, "haproxy", "-c", "-f", HAPROXY_CFG.container_path)
        )
        script.call(
            "kha_step",
            "keepalived-check",
            *check_argv(keepalived, staged, "keepalived", "-t", "-f", KEEPALIVED_CONF.container_path),
        )
        return script

    def validate(self, plan: RollPlan) -> list[str]:
        """Every changing node's problems, in plan order; the nodes are checked at once (nothing changes)."""
        with ThreadPoolExecutor(max_workers=max(1, len(plan.changes))) as pool:
            return [p for problems in pool.map(self.validate_node, [c.node for c in plan.changes]) for p in problems]

    def validate_node(self, node: Node) -> list[str]:
        result = self.ssh.run(node.address, self.validation_script(node).text())
        if result.unreachable:
            return [f"{node.name}: unreachable over SSH ({result.reason()})"]
        problems = []
        done = {s.name: s for s in steps(result.stdout)}
        for run in node.runs:
            step = done.get(f"image-{run.name}")
            if step is None or step.returncode != 0:
                detail = _first_lines(step.output) if step else result.reason()
                problems.append(f"{node.name}: image {run.image} is not on the node and cannot be pulled: {detail}")
        haproxy, keepalived = done.get("haproxy-check"), done.get("keepalived-check")
        if haproxy and haproxy.returncode != 0:
            problems.append(
                f"{node.name}: {HAPROXY_CFG.host_path}: haproxy -c in {node.run(HAPROXY).image} refuses it: "
                + _first_lines(haproxy.output, "[ALERT]")
            )
        if keepalived and (keepalived.returncode not in KEEPALIVED_TEST_OK or keepalived.output.strip()):
            problems.append(
                f"{node.name}: {KEEPALIVED_CONF.host_path}: keepalived -t in {node.run(KEEPALIVED).image} reports: "
                + _first_lines(keepalived.output)
            )
        if (haproxy is None or keepalived is None) and not problems:
            problems.append(
                f"{node.name}: validation did not run to the end ({failed_write(result.stdout) or result.reason()})"
            )
        return problems

    # --- Changing one node.

    def _run(self, node: Node, script: Script, what: str) -> Result:
        result = self.ssh.run(node.address, script.text())
        if result.unreachable:
            reason = result.reason()
            raise RollStopped(
                f"{node.name}: unreachable over SSH while {what} ({reason})", StopKind.UNREACHABLE, node.name, reason
            )
        failed = [s for s in steps(result.stdout) if s.returncode != 0]
        if failed:
            detail = f"{failed[0].name}: {_first_lines(failed[0].output)}"
            raise RollStopped(
                f"{node.name}: {failed[0].name} failed while {what}: {_first_lines(failed[0].output)}",
                StopKind.STEP_FAILED,
                node.name,
                detail,
            )
        if write := failed_write(result.stdout):
            raise RollStopped(f"{node.name}: {write} failed while {what}", StopKind.STEP_FAILED, node.name, write)
        if result.returncode != 0:
            reason = result.reason()
            raise RollStopped(f"{node.name}: {what} failed: {reason}", StopKind.STEP_FAILED, node.name, reason)
        return result

    def report(self, node: Node) -> NodeReport | None:
        return fetch(self.inv, node, self.ssh).report

    def _holds(self, node: Node) -> bool | None:
        result = self.ssh.run(node.address, Script().call("kha_addresses").text())
        if result.unreachable:
            return None
        found = {" ".join(h): lines for h, lines in sections(result.stdout)}
        return self.inv.vip in parse_addresses(found.get("addresses", []))

    def _wait_for_handover(self, change: NodeChange) -> str:
        others = [n for n in self.inv.nodes if n.name != change.node.name]
        deadline = self.clock() + self.handover_timeout
        while True:
            if self._holds(change.node) is False:
                taken = [n.name for n in others if self._holds(n)]
                if taken:
                    return taken[0]
            if self.clock() >= deadline:
                break
            self.sleep(0.2)
        restart = Script().step("start-keepalived", "docker", "start", KEEPALIVED)
        self.ssh.run(change.node.address, restart.text())
        raise RollStopped(
            f"{change.node.name}: no other node took the VIP within {self.handover_timeout:g} s of stopping keepalived "
            "there; keepalived was started again and the roll stops",
            StopKind.NO_HANDOVER,
            change.node.name,
        )

    def _gate_problems(self, change: NodeChange, before: NodeReport, after: NodeReport | None) -> list[str]:
        if after is None:
            return ["no report over SSH"]
        problems = []
        changes = diff(change.node, after)
        problems += [f"{d.what}: {d.why}" for d in changes.drifts]
        if not after.haproxy_answers:
            problems.append(f"haproxy does not answer on 127.0.0.1:{self.inv.health_port}")
        if (HAPROXY in change.recreate or HAPROXY in change.reloads) and after.haproxy_started in (
            None,
            before.haproxy_started,
        ):
            problems.append("haproxy has not reloaded yet (same process start time)")
        expected = "MASTER" if change.holder and not change.hands_over else "BACKUP"
        state = after.keepalived_state
        if state != expected:
            problems.append(f"keepalived is {state or 'without state'}, expected {expected}")
        elif KEEPALIVED in change.recreate or change.hands_over:
            if int(after.state.get("since", "0")) < before.time:
                problems.append("keepalived's state is older than the change")
        if after.holds(self.inv.vip) != (expected == "MASTER"):
            problems.append("holds the VIP" if expected == "BACKUP" else "does not hold the VIP")
        return problems

    def _gate(self, change: NodeChange, before: NodeReport) -> float:
        start = self.clock()
        while True:
            problems = self._gate_problems(change, before, self.report(change.node))
            if not problems:
                return self.clock() - start
            if self.clock() - start >= self.gate_timeout:
                raise RollStopped(
                    f"{change.node.name}: not healthy {self.gate_timeout:g} s after the change: {'; '.join(problems)}",
                    StopKind.UNHEALTHY,
                    change.node.name,
                    "; ".join(problems),
                )
            self.sleep(POLL_S)

    def roll_node(self, change: NodeChange) -> None:
        node = change.node
        before = self.report(node)
        if before is None:
            raise RollStopped(
                f"{node.name}: unreachable over SSH before its change; it and the nodes after it are untouched",
                StopKind.UNREACHABLE,
                node.name,
            )
        write = Script()
        for f, _ in change.files:
            write.put(f.path, f.owner, f.permissions, f.content)
        if change.hands_over:
            self.say(f"{node.name}: handing the VIP over (docker stop keepalived)")
            self._run(node, write.step("handover", "docker", "stop", KEEPALIVED), "handing the VIP over")
            self.say(f"{node.name}: {self._wait_for_handover(change)} holds the VIP now")
            script = Script()
        else:
            script = write
        for name in change.recreate:
            script.step(f"recreate-{name}", "kha_recreate", name, *node.run(name).argv)
        if change.hands_over and KEEPALIVED not in change.recreate:
            script.step("start-keepalived", "docker", "start", KEEPALIVED)
        if HAPROXY in change.reloads:
            script.step("reload-haproxy", "docker", "kill", "--signal", "USR2", HAPROXY)
        if KEEPALIVED in change.reloads:
            script.step("reload-keepalived", "kha_reload_keepalived", KEEPALIVED)
        what = ", ".join([f"recreate {n}" for n in change.recreate] + [f"reload {n}" for n in change.reloads])
        self.say(f"{node.name}: {len(change.files)} file(s) written" + (f"; {what}" if what else ""))
        self._run(node, script, "applying the change")
        took = self._gate(change, before)
        self.say(f"{node.name}: healthy after {took:.1f} s")

    def roll(self, plan: RollPlan) -> None:
        problems = self.validate(plan)
        if problems:
            raise RollStopped(
                "validation failed, no node was changed:\n" + "\n".join(f"  {p}" for p in problems),
                StopKind.VALIDATION_FAILED,
                detail="\n".join(problems),
                not_rolled=tuple(c.node.name for c in plan.changes),
            )
        self.say(f"validated the new files of {', '.join(c.node.name for c in plan.changes)} in their target images")
        for i, change in enumerate(plan.changes):
            try:
                self.roll_node(change)
            except RollStopped as err:
                later = [c.node.name for c in plan.changes[i + 1 :]]
                untouched = f"; not rolled: {', '.join(later)}" if later else ""
                raise RollStopped(
                    f"{err}{untouched}",
                    err.kind,
                    err.node,
                    err.detail,
                    rolled=tuple(c.node.name for c in plan.changes[:i]),
                    not_rolled=tuple(c.node.name for c in plan.changes[i:]),
                ) from None
