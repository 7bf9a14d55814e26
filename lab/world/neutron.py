"""Neutron's port security and security groups for the lab's bridge, as an nftables ruleset.

Neutron filters every VM port: port security lets a port send only from its fixed IPs and its
allowed address pairs (ARP included), and its security groups admit, statefully, only what their
ingress rules allow; egress is open by Neutron's default rules. The lab enforces the same on the
bridge that stands in for the tenant network, taking the rules from the synthesized JSON.

Why two tables: conntrack is not available in the `bridge` family on this kernel
(CONFIG_NF_CONNTRACK_BRIDGE is unset; `ct state` there fails with EPROTO). br_netfilter is built
in, so bridged IPv4 passes the `ip` family hooks, where conntrack works, but those hooks only see
the bridge, not its ports. The `bridge` table therefore does what needs the port (port security,
the cut switch) and tags each frame's mark with its input and output port; the `ip` table
filters statefully by those tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lab.world.synth import Port, Rule

TABLE = "kha"
CUT_SET = "cut"


class Filters(Protocol):
    """What the ruleset is made from: the synthesized stack (`synth.Stack`), or what Neutron holds
    (`lab.world.tenant`)."""

    @property
    def rules(self) -> tuple[Rule, ...]: ...

    @property
    def open_egress(self) -> frozenset[str]: ...

    def members(self, secgroup: str) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Wiring:
    """A node port as wired in the lab: its bridge-side veth and the MAC of its node end."""

    port: Port
    ifname: str
    mac: str
    tag: int  # 1..255, the port's number in the mark (input: bits 0-7, output: bits 8-15)


def _set(items: tuple[str, ...]) -> str:
    return "{ " + ", ".join(items) + " }"


def _match(rule: Rule, stack: Filters) -> str | None:
    """The nft match for one rule; None when it can match nothing (an empty remote group)."""
    parts = []
    if rule.remote_group:
        members = stack.members(rule.remote_group)
        if not members:
            return None
        parts.append(f"ip saddr {_set(members)}")
    elif rule.remote_prefix:
        parts.append(f"ip saddr {rule.remote_prefix}")
    if rule.protocol is not None:
        parts.append(f"meta l4proto {rule.protocol}")
        if rule.protocol == "icmp":
            if rule.port_min is not None:
                parts.append(f"icmp type {rule.port_min}")
            if rule.port_max is not None:
                parts.append(f"icmp code {rule.port_max}")
        elif rule.port_min is not None:
            hi = rule.port_max if rule.port_max is not None else rule.port_min
            parts.append(f"th dport {rule.port_min}" if hi == rule.port_min else f"th dport {rule.port_min}-{hi}")
    return " ".join(parts)


def _rules_chain(name: str, rules: list[Rule], stack: Filters, verdict: str) -> list[str]:
    lines = [f"  chain {name} {{"]
    for rule in rules:
        match = _match(rule, stack)
        if match is not None:
            lines.append(f'    {match} {verdict} comment "{rule.name}"')
    lines += ["    drop", "  }"]
    return lines


def ruleset(stack: Filters, wirings: list[Wiring]) -> str:
    """The whole ruleset (both tables) for `nft -f`, replacing any previous one."""
    bridge_pre = ["    meta mark set 0", f"    iifname @{CUT_SET} drop"]
    bridge_fwd = [f"    oifname @{CUT_SET} drop"]
    ip_fwd = ["    ct state invalid drop", "    ct state established,related accept"]
    chains: list[str] = []
    for w in wirings:
        if not w.port.port_security:
            continue
        addrs = _set(w.port.addresses)
        bridge_pre.append(f'    iifname "{w.ifname}" jump port_security_{w.tag}')
        chains += [
            f"  chain port_security_{w.tag} {{",
            f"    meta mark set {w.tag:#x}",
            f"    ether saddr != {w.mac} drop",
            f"    ether type arp arp saddr ip {addrs} accept",
            f"    ether type ip ip saddr {addrs} accept",
            "    drop",
            "  }",
        ]
        bridge_fwd.append(f'    oifname "{w.ifname}" meta mark set meta mark | {w.tag << 8:#x}')
    ip_chains: list[str] = []
    for w in wirings:
        if not w.port.port_security:
            continue
        if not all(sg in stack.open_egress for sg in w.port.secgroups):
            egress = [r for r in stack.rules if r.direction == "egress" and r.secgroup in w.port.secgroups]
            ip_fwd.append(f"    meta mark & 0xff == {w.tag:#x} jump egress_{w.tag}")
            ip_chains += _rules_chain(f"egress_{w.tag}", egress, stack, "return")
    for w in wirings:
        if not w.port.port_security:
            continue
        ingress = [r for r in stack.rules if r.direction == "ingress" and r.secgroup in w.port.secgroups]
        ip_fwd.append(f"    meta mark & 0xff00 == {w.tag << 8:#x} jump ingress_{w.tag}")
        ip_chains += _rules_chain(f"ingress_{w.tag}", ingress, stack, "accept")
    return "\n".join(
        [
            f"table bridge {TABLE}",
            f"delete table bridge {TABLE}",
            f"table ip {TABLE}",
            f"delete table ip {TABLE}",
            f"table bridge {TABLE} {{",
            f"  set {CUT_SET} {{ type ifname; }}",
            "  chain prerouting {",
            "    type filter hook prerouting priority -200; policy accept;",
            *bridge_pre,
            "  }",
            "  chain forward {",
            "    type filter hook forward priority -200; policy accept;",
            *bridge_fwd,
            "  }",
            *chains,
            "}",
            f"table ip {TABLE} {{",
            "  chain forward {",
            "    type filter hook forward priority 0; policy accept;",
            *ip_fwd,
            "  }",
            *ip_chains,
            "}",
            "",
        ]
    )


def cut_command(ifname: str, cut: bool) -> list[str]:
    """nft argv that cuts (or heals) a port: all its frames dropped in both directions."""
    return ["nft", "add" if cut else "delete", "element", "bridge", TABLE, CUT_SET, f'{{ "{ifname}" }}']
