"""What the plan derives where the config leaves a value out: node names, the VRID, the gateway.

Pure functions of raw values, decided here once: `cluster.plan` makes the plan with them, and the
config's own checks (a name that leaves room for the node suffix, VRIDs that clash on a network,
an address that is the gateway) ask them too, without importing the plan that sits above the config.
"""

from __future__ import annotations

import hashlib
import ipaddress

# Without nodes.members the nodes are named `<cluster>-cp-<n>`, n counted from 1.
NODE_SUFFIX = "-cp-{}"


def node_names(cluster: str, count: int) -> tuple[str, ...]:
    return tuple(f"{cluster}{NODE_SUFFIX.format(n)}" for n in range(1, count + 1))


def vrid(cluster: str, configured: int | None) -> int:
    """The configured VRID, else one derived from the cluster name (stable across synths): unique
    per L2 segment, or keepalived logs "VRID not present in MASTER advert" (OpenShift hashes too)."""
    if configured is not None:
        return configured
    return int.from_bytes(hashlib.sha256(cluster.encode()).digest()[:4], "big") % 255 + 1


def gateway(subnet: ipaddress.IPv4Network, configured: ipaddress.IPv4Address | None) -> ipaddress.IPv4Address:
    """The subnet's gateway as configured, else its first host address (Neutron's default)."""
    return configured or next(subnet.hosts())
