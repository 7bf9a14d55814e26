"""Write one node's files out of a synthesized stack, exactly as its cloud-config carries them:

    python -m userdata.extract cdktf.out/stacks/demo/cdk.tf.json demo-cp-2 ./demo-cp-2

writes that node's haproxy.cfg, keepalived.conf and scripts under the given folder (by their path
on the node). `make show-userdata NODE=...` prints the whole cloud-config instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from userdata.cloudconfig import written_files
from userdata.stack import read, user_data_by_node


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    stack_json, node, out = argv
    try:
        by_node = user_data_by_node(read(stack_json))
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
