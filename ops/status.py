"""What each node reports, what differs from the synthesized userdata, and the findings that make
`status` exit non-zero: no holder, two holders, FAULT, an apiserver DOWN, a container not running,
drift, a node unreachable.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ops.inventory import Inventory
from ops.remote import Report, ReportError, Script, parse_report
from ops.ssh import Ssh
from userdata.cloudconfig import WrittenFile
from userdata.render import CONTAINERS, HAPROXY_CONTAINER, KEEPALIVED_CONTAINER
from userdata.stack import Node


@dataclass(frozen=True)
class NodeStatus:
    node: Node
    report: Report | None
    error: str | None = None  # why there is no report


def report_script(inv: Inventory, node: Node) -> str:
    return Script().report(inv.health_port, [f.path for f in node.files]).text()


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


@dataclass(frozen=True)
class Diff:
    """How a node differs from its userdata: files to write, containers to recreate (with why)."""

    files: tuple[tuple[WrittenFile, str], ...]
    containers: tuple[tuple[str, str], ...]

    @property
    def empty(self) -> bool:
        return not self.files and not self.containers


def diff(node: Node, report: Report) -> Diff:
    files = []
    for want in node.files:
        have = report.files.get(want.path)
        if have is None or have.sha256 is None:
            files.append((want, "missing"))
        elif have.sha256 != sha256(want.content):
            files.append((want, "content differs"))
        elif have.owner != want.owner or have.mode != want.permissions.zfill(4):
            files.append((want, f"owner/mode {have.owner} {have.mode}, userdata says {want.owner} {want.permissions}"))
    containers = []
    for name in CONTAINERS:
        line, have = node.run(name), report.containers[name]
        if not have.exists:
            containers.append((name, "does not exist"))
        elif have.image != line.image:
            containers.append((name, f"image change: runs {have.image}, userdata says {line.image}"))
        elif have.label != line.label:
            containers.append((name, "created from another docker run line than the userdata's"))
        elif not have.running:
            containers.append((name, f"not running ({have.status})"))
    return Diff(tuple(files), tuple(containers))


def holders(inv: Inventory, statuses: list[NodeStatus]) -> list[str]:
    return [s.node.name for s in statuses if s.report and s.report.holds(inv.vip)]


def findings(inv: Inventory, statuses: list[NodeStatus]) -> list[str]:
    out = []
    unreachable = [s for s in statuses if s.report is None]
    held_by = holders(inv, statuses)
    if not held_by and len(unreachable) < len(statuses):
        among = " among the reachable nodes" if unreachable else ""
        out.append(f"no node holds the VIP {inv.vip}{among}")
    elif len(held_by) > 1:
        out.append(f"{len(held_by)} nodes hold the VIP {inv.vip}: {', '.join(held_by)}")
    for s in statuses:
        name, report = s.node.name, s.report
        if report is None:
            out.append(f"{name}: unreachable over SSH ({s.error})")
            continue
        state = report.keepalived_state
        if state == "FAULT":
            out.append(f"{name}: keepalived is in FAULT")
        elif state is None and report.containers[KEEPALIVED_CONTAINER].running:
            out.append(f"{name}: keepalived has recorded no state (no state file)")
        if not report.haproxy_answers and report.containers[HAPROXY_CONTAINER].running:
            out.append(f"{name}: haproxy does not answer on 127.0.0.1:{inv.health_port}")
        for api in report.apiservers:
            if api.down:
                out.append(f"{name}: haproxy sees apiserver {api.name} {api.status} ({api.check}: {api.last_check or 'no check yet'})")
        for container in report.containers.values():
            if not container.exists:
                out.append(f"{name}: container {container.name} does not exist")
            elif not container.running:
                out.append(f"{name}: container {container.name} is not running ({container.status})")
        changes = diff(s.node, report)
        for file, why in changes.files:
            out.append(f"{name}: drift: {file.path}: {why}")
        for container, why in changes.containers:
            if why.startswith(("image change", "created from")):
                out.append(f"{name}: drift: container {container}: {why}")
    return out


def as_json(inv: Inventory, statuses: list[NodeStatus], found: list[str]) -> dict[str, Any]:
    nodes = []
    for s in statuses:
        entry: dict[str, Any] = {"name": s.node.name, "address": s.node.address, "reachable": s.report is not None}
        if s.report is None:
            entry["error"] = s.error
        else:
            r = s.report
            changes = diff(s.node, r)
            entry.update(
                keepalived={"state": r.keepalived_state, "since": _int(r.state.get("since")), "priority": _int(r.state.get("priority"))},
                holds_vip=r.holds(inv.vip),
                haproxy_answers=r.haproxy_answers,
                apiservers=[{"name": a.name, "status": a.status, "check": a.check, "last_check": a.last_check} for a in r.apiservers],
                containers={
                    c.name: {"exists": c.exists, "running": c.running, "status": c.status, "image": c.image, "image_id": c.image_id}
                    for c in r.containers.values()
                },
                drift={
                    "files": [{"path": f.path, "why": why} for f, why in changes.files],
                    "containers": [{"name": n, "why": why} for n, why in changes.containers],
                },
            )
        nodes.append(entry)
    return {
        "cluster": inv.cluster,
        "vip": inv.vip,
        "healthy": not found,
        "holders": holders(inv, statuses),
        "nodes": nodes,
        "findings": found,
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
        drifted = len(changes.files) + sum(1 for _, why in changes.containers if not why.startswith(("not running", "does not")))
        rows.append((
            s.node.name,
            s.node.address,
            "ok",
            r.keepalived_state or "?",
            "yes" if r.holds(inv.vip) else "-",
            f"{up}/{len(r.apiservers)}" if r.haproxy_answers else "no answer",
            _container_cell(r, HAPROXY_CONTAINER),
            _container_cell(r, KEEPALIVED_CONTAINER),
            str(drifted) if drifted else "-",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _container_cell(report: Report, name: str) -> str:
    c = report.containers[name]
    if not c.exists:
        return "missing"
    return c.image if c.running else f"{c.image} ({c.status})"
