"""The synthesized JSON's variants: each a config the project ships, or the example with the changes
that reach a different part of the JSON. Terraform and OpenTofu validate each (tests/test_terraform.py);
both toolchains synthesize each (tests/test_toolchain.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.config import ClusterConfig, load_config
from tests.conftest import DELETE, EXAMPLE, ROOT, config_from


def _members(count: int) -> list[dict[str, str]]:
    return [{"name": f"demo-cp-{i}", "address": f"192.0.2.{10 + i}"} for i in range(1, count + 1)]


VARIANTS: dict[str, Any] = {
    "example.yaml": EXAMPLE,
    "team-s3.example.yaml": ROOT / "config" / "team-s3.example.yaml",
    "3 nodes without members": {"nodes.members": DELETE},
    "5 nodes with members": {"nodes.count": 5, "nodes.members": _members(5)},
    "5 nodes without members": {"nodes.count": 5, "nodes.members": DELETE},
    "7 nodes with members": {"nodes.count": 7, "nodes.members": _members(7)},
    "7 nodes without members": {"nodes.count": 7, "nodes.members": DELETE},
    "soft anti-affinity": {"nodes.anti_affinity": "soft"},
    "floating IP": {"vip.floating_ip_pool": "public"},
    "monitoring CIDRs": {"access.monitoring_cidrs": ["203.0.113.0/24", "198.51.100.7/32"]},
    "everything optional at once": {
        "nodes.count": 5,
        "nodes.members": DELETE,
        "nodes.anti_affinity": "soft",
        "nodes.extra_security_groups": ["default"],
        "vip.floating_ip_pool": "public",
        "access.monitoring_cidrs": ["203.0.113.0/24"],
    },
}


def variant_config(variant: Any) -> ClusterConfig:
    return load_config(variant) if isinstance(variant, Path) else config_from(variant)
