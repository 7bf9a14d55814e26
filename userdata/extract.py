"""Read the node files back out of a synthesized stack: for rolling a node on day 2, and for the lab.

    python -m userdata.extract cdktf.out/stacks/demo/cdk.tf.json demo-cp-2 ./demo-cp-2

writes that node's haproxy.cfg, keepalived.conf and check script, exactly as its cloud-config
carries them, under the given folder (by their path on the node).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INSTANCE_TYPE = "openstack_compute_instance_v2"


@dataclass(frozen=True)
class WrittenFile:
    path: str
    content: str
    owner: str
    permissions: str


def user_data_by_node(doc: dict[str, Any]) -> dict[str, str]:
    """Each instance's user_data, keyed by the VM name."""
    instances = doc.get("resource", {}).get(INSTANCE_TYPE, {})
    return {vm["name"]: vm["user_data"] for vm in instances.values()}


def written_files(user_data: str) -> dict[str, WrittenFile]:
    """The cloud-config's write_files, keyed by path on the node."""
    if "${" in user_data:
        raise ValueError("user_data still holds Terraform references (Neutron-allocated addresses): read it from the state instead")
    doc = yaml.safe_load(user_data)
    return {
        f["path"]: WrittenFile(f["path"], f["content"], f.get("owner", "root:root"), f.get("permissions", "0644"))
        for f in doc.get("write_files", [])
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    stack_json, node, out = argv
    try:
        by_node = user_data_by_node(json.loads(Path(stack_json).read_text()))
    except (OSError, ValueError) as err:
        print(f"error: cannot read {stack_json}: {err}", file=sys.stderr)
        return 2
    if node not in by_node:
        print(f"error: node {node!r} is not in {stack_json}; nodes: {', '.join(sorted(by_node))}", file=sys.stderr)
        return 2
    try:
        files = written_files(by_node[node])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for f in files.values():
        target = Path(out) / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content)
        target.chmod(int(f.permissions, 8))
        print(f"{target}  (owner {f.owner}, mode {f.permissions} on the node)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
