"""python -m ops status|roll: see and change the HA endpoint of one cluster (CONFIG chooses it, as for synth)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cluster.config import ConfigError, load_configs
from cluster.plan import make_plan
from ops import OpsError
from ops.inventory import load_inventory, stack_json_path
from ops.roll import Roller, RollStopped, describe, make_roll_plan
from ops.ssh import Ssh, SshOptions
from ops.status import as_json, collect, findings, table

ROOT = Path(__file__).resolve().parent.parent

DEPLOY_HINT = (
    "now run `cdktf deploy` (make deploy, same CONFIG): it records the new userdata hashes in the "
    "terraform_data.userdata_<node> trackers; the instances ignore user_data changes, so no VM is replaced"
)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="the cluster's YAML (default: $CONFIG, else config/example.yaml)")
    common.add_argument("--cluster", help="which cluster, when CONFIG names several")
    common.add_argument("--stack", type=Path, help="the synthesized cdk.tf.json (default: cdktf.out/stacks/<cluster>/cdk.tf.json)")
    common.add_argument("--ssh-user", help="log in as this user (default: ssh's, e.g. from ~/.ssh/config)")
    common.add_argument("--ssh-option", action="append", default=[], metavar="OPTION", help="an ssh -o option; repeatable")
    common.add_argument("--connect-timeout", type=int, default=5, metavar="S", help="ssh connect timeout (default: 5)")
    common.add_argument("--no-sudo", action="store_true", help="the login is root: run the node scripts without sudo")
    top = argparse.ArgumentParser(prog="python -m ops", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", parents=[common], help="each node's keepalived, VIP, haproxy view, images and drift")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    roll = sub.add_parser("roll", parents=[common], help="bring every node to the synthesized userdata, one at a time")
    roll.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    roll.add_argument("--timeout", type=float, default=60.0, metavar="S", help="health gate per node (default: 60)")
    return top


def main(argv: list[str] | None = None, ssh: Ssh | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        configs = load_configs(args.config or os.environ.get("CONFIG"))
        if args.cluster:
            configs = [c for c in configs if c.name == args.cluster] or configs[:0]
            if not configs:
                raise OpsError(f"--cluster: {args.cluster!r} is not a cluster CONFIG names")
        if len(configs) != 1:
            raise OpsError(f"CONFIG names {len(configs)} clusters ({', '.join(c.name for c in configs)}); choose one with --cluster")
        plan = make_plan(configs[0])
        inv = load_inventory(plan, args.stack or stack_json_path(plan, ROOT))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OpsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ssh = ssh or Ssh(SshOptions(args.ssh_user, tuple(args.ssh_option), args.connect_timeout, not args.no_sudo))
    statuses = collect(inv, ssh)
    if args.command == "status":
        found = findings(inv, statuses)
        if args.json:
            print(json.dumps(as_json(inv, statuses, found), indent=2))
        else:
            print(table(inv, statuses))
            print()
            print("\n".join(f.message for f in found) if found else "healthy: one VIP holder, every node as its userdata says")
        return 1 if found else 0
    try:
        roll_plan = make_roll_plan(inv, statuses)
        print("\n".join(describe(roll_plan)))
        if args.dry_run or not roll_plan.changes:
            return 0
        Roller(inv, ssh, gate_timeout=args.timeout).roll(roll_plan)
    except RollStopped as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"rolled {len(roll_plan.changes)} node(s); {DEPLOY_HINT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
