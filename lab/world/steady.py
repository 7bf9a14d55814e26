"""The lab's steady state, which every drill starts from and returns to, read from what the lab
observes (VIP holders, the daemons' logs, the client's attempts); `Lab.wait_steady` waits for it.
"""

from __future__ import annotations

import time

from lab.world.client import Recorder
from lab.world.node import LabNode


def unsteady_reason(
    holders: list[str], nodes: dict[str, LabNode], vrrp_calm: dict[str, float], client: Recorder, quiet: float = 1.0
) -> str | None:
    """Why the lab is not in its steady state, or None: exactly one VIP holder, every
    process up, every haproxy seeing every backend up, every keepalived MASTER or BACKUP,
    no keepalived state or priority change for as long as a backup needs to act on it, and
    the last `quiet` seconds of client attempts all served, by every node."""
    if len(holders) != 1:
        return f"VIP holders {holders}"
    for node in nodes.values():
        d = node.daemons
        for c in d.containers:
            if not c.running:
                return f"{node.name}: container {c.name} not running"
        if not node.apiserver.running:
            return f"{node.apiserver.name} not running"
        if d.servers_down:
            return f"{node.name}: haproxy sees {sorted(d.servers_down)} down"
        if d.vrrp_state not in ("MASTER", "BACKUP"):
            return f"{node.name}: keepalived {d.vrrp_state}"
    if reason := vrrp_unsettled(nodes, vrrp_calm):
        return reason
    now = time.monotonic()
    recent = [a for a in client.between(now - quiet) if a.end <= now]
    if any(not a.ok for a in recent):
        return f"client failures in the last {quiet} s"
    answered = {a.node for a in recent}
    if answered != set(nodes):
        return f"client answered by {sorted(n for n in answered if n)} only"
    return None


def vrrp_unsettled(nodes: dict[str, LabNode], vrrp_calm: dict[str, float]) -> str | None:
    """Why keepalived may still move the VIP by itself, or None."""
    now = time.monotonic()
    for name, calm in vrrp_calm.items():
        if now - nodes[name].daemons.vrrp_changed < calm:
            return f"{name}: keepalived changed state or priority less than {calm:.1f} s ago"
    return None
