"""What each node reports, what differs from the synthesized userdata, and the findings that make
`status` exit non-zero: no holder, two holders, FAULT, an apiserver DOWN, a container not running,
drift, a node unreachable.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cluster.plan import BOOT_FAILED_MARK
from ops.inventory import Inventory
from ops.remote import NodeReport, ReportError, Script, parse_report
from ops.ssh import Ssh
from userdata.cloudconfig import WrittenFile
from userdata.render import CONTAINERS, HAPROXY_CONTAINER, KEEPALIVED_CONTAINER
from userdata.stack import Node


@dataclass(frozen=True)
class NodeStatus:
    node: Node
    report: NodeReport | None
    error: str | None = None  # why there is no report


def report_script(inv: Inventory, node: Node) -> str:
    return Script().boot().report(inv.health_port, [f.path for f in node.files]).text()


def fetch(inv: Inventory, node: Node, ssh: Ssh) -> NodeStatus:
    result = ssh.run(node.address, report_script(inv, node))
    if result.unreachable:
        return NodeStatus(node, None, result.reason())
    try:
        return NodeStatus(node, parse_report(result.stdout))
    except (ReportError, ValueError):
        return NodeStatus(node, None, f"no report ({result.reason()})")


def collect(inv: Inventory, ssh: Ssh) -> list[NodeStatus]:
    with ThreadPoolExecutor(max_workers=len(inv.nodes)) as pool:
        return list(pool.map(lambda n: fetch(inv, n, ssh), inv.nodes))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DriftKind(Enum):
    """How a file or a container differs from what the userdata says."""

    FILE_MISSING = "file_missing"
    FILE_CONTENT = "file_content"
    FILE_OWNER_MODE = "file_owner_mode"
    CONTAINER_MISSING = "container_missing"
    CONTAINER_IMAGE = "container_image"
    CONTAINER_LINE = "container_line"
    CONTAINER_STOPPED = "container_stopped"

    @property
    def of_file(self) -> bool:
        return self in (DriftKind.FILE_MISSING, DriftKind.FILE_CONTENT, DriftKind.FILE_OWNER_MODE)

    @property
    def is_drift(self) -> bool:
        """What the node holds or runs differs; not merely a container that is down, which status
        reports as such."""
        return self not in (DriftKind.CONTAINER_MISSING, DriftKind.CONTAINER_STOPPED)


@dataclass(frozen=True)
class Drift:
    kind: DriftKind
    subject: str  # the file's path on the node, or the container's name
    have: str = ""  # what the node has, where the message names it
    want: str = ""  # what the userdata says, where the message names it

    @property
    def what(self) -> str:
        return self.subject if self.kind.of_file else f"container {self.subject}"

    @property
    def why(self) -> str:
        match self.kind:
            case DriftKind.FILE_MISSING:
                return "missing"
            case DriftKind.FILE_CONTENT:
                return "content differs"
            case DriftKind.FILE_OWNER_MODE:
                return f"owner/mode {self.have}, userdata says {self.want}"
            case DriftKind.CONTAINER_MISSING:
                return "does not exist"
            case DriftKind.CONTAINER_IMAGE:
                return f"image change: runs {self.have}, userdata says {self.want}"
            case DriftKind.CONTAINER_LINE:
                return "created from another docker run line than the userdata's"
            case DriftKind.CONTAINER_STOPPED:
                return f"not running ({self.have})"


@dataclass(frozen=True)
class Diff:
    """How a node differs from its userdata: files to write, containers to recreate (with why)."""

    files: tuple[tuple[WrittenFile, Drift], ...]
    containers: tuple[tuple[str, Drift], ...]

    @property
    def empty(self) -> bool:
        return not self.files and not self.containers

    @property
    def drifts(self) -> tuple[Drift, ...]:
        return tuple(d for _, d in self.files + self.containers)


def _file_drift(want: WrittenFile, report: NodeReport) -> Drift | None:
    have = report.files.get(want.path)
    if have is None or have.sha256 is None:
        return Drift(DriftKind.FILE_MISSING, want.path)
    if have.sha256 != sha256(want.content):
        return Drift(DriftKind.FILE_CONTENT, want.path)
    if have.owner != want.owner or have.mode != want.permissions.zfill(4):
        seen, said = f"{have.owner} {have.mode}", f"{want.owner} {want.permissions}"
        return Drift(DriftKind.FILE_OWNER_MODE, want.path, seen, said)
    return None


def _container_drift(node: Node, name: str, report: NodeReport) -> Drift | None:
    line, have = node.run(name), report.containers[name]
    if not have.exists:
        return Drift(DriftKind.CONTAINER_MISSING, name)
    if have.image != line.image:
        return Drift(DriftKind.CONTAINER_IMAGE, name, str(have.image), line.image)
    if have.label != line.label:
        return Drift(DriftKind.CONTAINER_LINE, name)
    if not have.running:
        return Drift(DriftKind.CONTAINER_STOPPED, name, str(have.status))
    return None


def diff(node: Node, report: NodeReport) -> Diff:
    files = [(want, d) for want in node.files if (d := _file_drift(want, report))]
    containers = [(name, d) for name in CONTAINERS if (d := _container_drift(node, name, report))]
    return Diff(tuple(files), tuple(containers))


def holders(inv: Inventory, statuses: list[NodeStatus]) -> list[str]:
    return [s.node.name for s in statuses if s.report and s.report.holds(inv.vip)]


class FindingKind(Enum):
    """What makes `status` exit non-zero; the roll refuses to start on unreachable nodes and on a VIP
    without exactly one holder. The values are the kinds `status --json` names (`finding_details`)."""

    UNREACHABLE = "unreachable"
    BOOT_FAILED = "boot_failed"
    NO_HOLDER = "no_holder"
    SEVERAL_HOLDERS = "several_holders"
    KEEPALIVED_FAULT = "keepalived_fault"
    KEEPALIVED_NO_STATE = "keepalived_no_state"
    HAPROXY_SILENT = "haproxy_silent"
    APISERVER_DOWN = "apiserver_down"
    CONTAINER_MISSING = "container_missing"
    CONTAINER_STOPPED = "container_stopped"
    DRIFT = "drift"


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    node: str | None = None  # None: the finding is about the cluster
    subject: str = ""  # the VIP, the address, the apiserver or the container it names
    detail: str = ""  # what was seen
    holders: tuple[str, ...] = ()
    drift: Drift | None = None

    @property
    def message(self) -> str:
        match self.kind:
            case FindingKind.NO_HOLDER:
                return f"no node holds the VIP {self.subject}" + (f" {self.detail}" if self.detail else "")
            case FindingKind.SEVERAL_HOLDERS:
                return f"{len(self.holders)} nodes hold the VIP {self.subject}: {', '.join(self.holders)}"
            case FindingKind.UNREACHABLE:
                text = f"unreachable over SSH ({self.detail})"
            case FindingKind.BOOT_FAILED:
                text = f"first boot failed: {self.detail} ({self.subject} on the node; cloud-init's log says more)"
            case FindingKind.KEEPALIVED_FAULT:
                text = "keepalived is in FAULT"
            case FindingKind.KEEPALIVED_NO_STATE:
                text = "keepalived has recorded no state (no state file)"
            case FindingKind.HAPROXY_SILENT:
                text = f"haproxy does not answer on {self.subject}"
            case FindingKind.APISERVER_DOWN:
                text = f"haproxy sees apiserver {self.subject} {self.detail}"
            case FindingKind.CONTAINER_MISSING:
                text = f"container {self.subject} does not exist"
            case FindingKind.CONTAINER_STOPPED:
                text = f"container {self.subject} is not running ({self.detail})"
            case FindingKind.DRIFT:
                assert self.drift is not None
                text = f"drift: {self.drift.what}: {self.drift.why}"
        return f"{self.node}: {text}"

    def as_json(self) -> dict[str, Any]:
        """The finding as data, beside its sentence: a drift names the file or container it is
        about as its subject and why as its detail."""
        subject, detail = (self.drift.subject, self.drift.why) if self.drift else (self.subject, self.detail)
        out: dict[str, Any] = {"kind": self.kind.value, "node": self.node, "subject": subject, "detail": detail}
        if self.kind is FindingKind.SEVERAL_HOLDERS:
            out["holders"] = list(self.holders)
        if self.drift is not None:
            out["drift"] = self.drift.kind.value
        return {**out, "message": self.message}


def _node_findings(inv: Inventory, s: NodeStatus) -> list[Finding]:
    name, report = s.node.name, s.report
    if report is None:
        return [Finding(FindingKind.UNREACHABLE, name, detail=str(s.error))]
    out = []
    if report.boot_failed:
        out.append(Finding(FindingKind.BOOT_FAILED, name, BOOT_FAILED_MARK, report.boot_failed))
    state = report.keepalived_state
    if state == "FAULT":
        out.append(Finding(FindingKind.KEEPALIVED_FAULT, name))
    elif state is None and report.containers[KEEPALIVED_CONTAINER].running:
        out.append(Finding(FindingKind.KEEPALIVED_NO_STATE, name))
    if not report.haproxy_answers and report.containers[HAPROXY_CONTAINER].running:
        out.append(Finding(FindingKind.HAPROXY_SILENT, name, f"127.0.0.1:{inv.health_port}"))
    for api in report.apiservers:
        if api.down:
            seen = f"{api.status} ({api.check}: {api.last_check or 'no check yet'})"
            out.append(Finding(FindingKind.APISERVER_DOWN, name, api.name, seen))
    for container in report.containers.values():
        if not container.exists:
            out.append(Finding(FindingKind.CONTAINER_MISSING, name, container.name))
        elif not container.running:
            out.append(Finding(FindingKind.CONTAINER_STOPPED, name, container.name, str(container.status)))
    out += [Finding(FindingKind.DRIFT, name, drift=d) for d in diff(s.node, report).drifts if d.kind.is_drift]
    return out


def findings(inv: Inventory, statuses: list[NodeStatus]) -> list[Finding]:
    out = []
    unreachable = [s for s in statuses if s.report is None]
    held_by = holders(inv, statuses)
    if not held_by and len(unreachable) < len(statuses):
        among = "among the reachable nodes" if unreachable else ""
        out.append(Finding(FindingKind.NO_HOLDER, subject=inv.vip, detail=among))
    elif len(held_by) > 1:
        out.append(Finding(FindingKind.SEVERAL_HOLDERS, subject=inv.vip, holders=tuple(held_by)))
    for s in statuses:
        out += _node_findings(inv, s)
    return out


def as_json(inv: Inventory, statuses: list[NodeStatus], found: list[Finding]) -> dict[str, Any]:
    nodes = []
    for s in statuses:
        entry: dict[str, Any] = {"name": s.node.name, "address": s.node.address, "reachable": s.report is not None}
        if s.report is None:
            entry["error"] = s.error
        else:
            r = s.report
            changes = diff(s.node, r)
            entry.update(
                keepalived={
                    "state": r.keepalived_state,
                    "since": _int(r.state.get("since")),
                    "priority": _int(r.state.get("priority")),
                },
                holds_vip=r.holds(inv.vip),
                boot_failed=r.boot_failed,
                haproxy_answers=r.haproxy_answers,
                apiservers=[
                    {"name": a.name, "status": a.status, "check": a.check, "last_check": a.last_check}
                    for a in r.apiservers
                ],
                containers={
                    c.name: {
                        "exists": c.exists,
                        "running": c.running,
                        "status": c.status,
                        "image": c.image,
                        "image_id": c.image_id,
                    }
                    for c in r.containers.values()
                },
                drift={
                    "files": [{"path": f.path, "why": d.why} for f, d in changes.files],
                    "containers": [{"name": n, "why": d.why} for n, d in changes.containers],
                },
            )
        nodes.append(entry)
    return {
        "cluster": inv.cluster,
        "vip": inv.vip,
        "healthy": not found,
        "holders": holders(inv, statuses),
        "nodes": nodes,
        "findings": [f.message for f in found],
        "finding_details": [f.as_json() for f in found],
    }


def _int(value: str | None) -> int | None:
    return int(value) if value and value.lstrip("-").isdigit() else None


def table(inv: Inventory, statuses: list[NodeStatus]) -> str:
    rows = [("NODE", "ADDRESS", "SSH", "KEEPALIVED", "VIP", "APISERVERS UP", "HAPROXY", "KEEPALIVED IMAGE", "DRIFT")]
    for s in statuses:
        r = s.report
        if r is None:
            rows.append((s.node.name, s.node.address, "no", "-", "-", "-", "-", "-", "-"))
            continue
        up = sum(not a.down for a in r.apiservers)
        changes = diff(s.node, r)
        drifted = sum(1 for d in changes.drifts if d.kind.is_drift)
        rows.append(
            (
                s.node.name,
                s.node.address,
                "ok",
                r.keepalived_state or "?",
                "yes" if r.holds(inv.vip) else "-",
                f"{up}/{len(r.apiservers)}" if r.haproxy_answers else "no answer",
                _container_cell(r, HAPROXY_CONTAINER),
                _container_cell(r, KEEPALIVED_CONTAINER),
                str(drifted) if drifted else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _container_cell(report: NodeReport, name: str) -> str:
    c = report.containers[name]
    if not c.exists:
        return "missing"
    return c.image if c.running else f"{c.image} ({c.status})"
