"""python -m ops status|roll|userdata|kubeadm-config|preflight: see and change the HA endpoint of one cluster
(CONFIG chooses it, as for synth), or check the cloud before deploying it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.config import ClusterConfig, ConfigError, load_configs
from cluster.plan import KUBEADM_CONFIG, KUBEADM_JOIN, Plan, make_plan
from ops import CONNECT_TIMEOUT_S, GATE_TIMEOUT_S, Exit, OpsError, openstack, preflight
from ops.inventory import Inventory, load_inventory, read_stack, stack_json_path
from ops.roll import Roller, RollPlan, RollStopped, describe, make_roll_plan
from ops.ssh import Ssh, SshOptions
from ops.status import as_json, collect, findings, table
from tfcheck.engine import EngineError
from userdata.cloudconfig import CloudConfigError, unescape, written_file_as_synthesized
from userdata.stack import FLOATING_IP_ADDRESS, PORT_ADDRESS, StackError

ROOT = Path(__file__).resolve().parent.parent

DEPLOY_HINT = (
    "now run `cdktf deploy` (make deploy, same CONFIG): it records the new userdata hashes in the "
    "terraform_data.userdata_<node> trackers; the instances ignore user_data changes, so no VM is replaced"
)


def parser() -> argparse.ArgumentParser:
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--config", help="the cluster's YAML (default: $CONFIG, else config/example.yaml)")
    cluster.add_argument("--cluster", help="which cluster, when CONFIG names several")
    cluster.add_argument(
        "--stack", type=Path, help="the synthesized cdk.tf.json (default: cdktf.out/stacks/<cluster>/cdk.tf.json)"
    )
    remote = argparse.ArgumentParser(add_help=False, parents=[cluster])
    remote.add_argument("--ssh-user", help="log in as this user (default: ssh's, e.g. from ~/.ssh/config)")
    remote.add_argument(
        "--ssh-option", action="append", default=[], metavar="OPTION", help="an ssh -o option; repeatable"
    )
    remote.add_argument(
        "--connect-timeout",
        type=int,
        default=CONNECT_TIMEOUT_S,
        metavar="S",
        help=f"ssh connect timeout (default: {CONNECT_TIMEOUT_S})",
    )
    remote.add_argument("--no-sudo", action="store_true", help="the login is root: run the node scripts without sudo")
    top = argparse.ArgumentParser(prog="python -m ops", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    status = sub.add_parser(
        "status", parents=[remote], help="each node's keepalived, VIP, haproxy view, images and drift"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    roll = sub.add_parser("roll", parents=[remote], help="bring every node to the synthesized userdata, one at a time")
    roll.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    roll.add_argument(
        "--json",
        action="store_true",
        help="machine-readable: the plan and the outcome (why it stopped, as data) on stdout, the progress on stderr",
    )
    roll.add_argument(
        "--timeout",
        type=float,
        default=GATE_TIMEOUT_S,
        metavar="S",
        help=f"health gate per node (default: {GATE_TIMEOUT_S:g})",
    )
    userdata = sub.add_parser(
        "userdata", parents=[cluster], help="print one node's cloud-config from the synthesized stack"
    )
    userdata.add_argument("node", help="the node's name, as in the config")
    kubeadm = sub.add_parser(
        "kubeadm-config", parents=[cluster], help="print one node's kubeadm configuration from the synthesized stack"
    )
    kubeadm.add_argument("node", help="the node's name, as in the config")
    check = sub.add_parser(
        "preflight",
        parents=[cluster],
        help="check the cloud (OS_CLOUD, clouds.yaml) has everything the stack needs, before anything is created",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    return top


def cluster_plan(args: argparse.Namespace) -> Plan:
    return make_plan(cluster_config(args))


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    configs = load_configs(args.config or os.environ.get("CONFIG"))
    if args.cluster:
        configs = [c for c in configs if c.name == args.cluster]
        if not configs:
            raise OpsError(f"--cluster: {args.cluster!r} is not a cluster CONFIG names")
    if len(configs) != 1:
        raise OpsError(
            f"CONFIG names {len(configs)} clusters ({', '.join(c.name for c in configs)}); choose one with --cluster"
        )
    return configs[0]


def stack_path(args: argparse.Namespace, plan: Plan) -> Path:
    return args.stack or stack_json_path(plan, ROOT)


def inventory(args: argparse.Namespace) -> Inventory:
    plan = cluster_plan(args)
    return load_inventory(plan, stack_path(args, plan))


def node_ssh(args: argparse.Namespace) -> Ssh:
    return Ssh(SshOptions(args.ssh_user, tuple(args.ssh_option), args.connect_timeout, not args.no_sudo))


def status(args: argparse.Namespace, ssh: Ssh | None) -> Exit:
    inv = inventory(args)
    statuses = collect(inv, ssh or node_ssh(args))
    found = findings(inv, statuses)
    if args.json:
        print(json.dumps(as_json(inv, statuses, found), indent=2))
    else:
        print(table(inv, statuses))
        print()
        print(
            "\n".join(f.message for f in found) if found else "healthy: one VIP holder, every node as its userdata says"
        )
    return Exit.UNHEALTHY if found else Exit.OK


def roll(args: argparse.Namespace, ssh: Ssh | None) -> Exit:
    inv = inventory(args)
    ssh = ssh or node_ssh(args)
    # With --json the lines a person reads go to stderr, and stdout holds one JSON document.
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    roll_plan: RollPlan | None = None
    try:
        roll_plan = make_roll_plan(inv, collect(inv, ssh))
        say("\n".join(describe(roll_plan)))
        if not args.dry_run and roll_plan.changes:
            Roller(inv, ssh, say=say, gate_timeout=args.timeout).roll(roll_plan)
            say(f"rolled {len(roll_plan.changes)} node(s); {DEPLOY_HINT}")
    except RollStopped as err:
        if args.json:
            print(json.dumps(roll_json(inv, roll_plan, args.dry_run, err), indent=2))
        raise
    if args.json:
        print(json.dumps(roll_json(inv, roll_plan, args.dry_run, None), indent=2))
    return Exit.OK


def roll_json(inv: Inventory, plan: RollPlan | None, dry_run: bool, stopped: RollStopped | None) -> dict[str, Any]:
    """`roll --json`: the plan (None where the roll refused to start) and how it ended."""
    changes = plan.changes if plan else ()
    done = not stopped and not dry_run
    return {
        "cluster": inv.cluster,
        "vip": inv.vip,
        "dry_run": dry_run,
        "holder": plan.holder if plan else None,
        "changes": [
            {
                "node": c.node.name,
                "kind": str(c.kind),
                "holder": c.holder,
                "files": [f.path for f, _ in c.files],
                "recreate": list(c.recreate),
                "reload": list(c.reloads),
            }
            for c in changes
        ],
        "unchanged": list(plan.unchanged) if plan else [],
        "rolled": [c.node.name for c in changes] if done else list(stopped.rolled if stopped else ()),
        "stopped": stopped.as_json() if stopped else None,
    }


def userdata(args: argparse.Namespace, ssh: Ssh | None) -> Exit:
    """The node's user_data as its VM receives it; a note on stderr where Terraform still fills
    in addresses (Neutron allocates them: the synthesized JSON only refers to them)."""
    plan = cluster_plan(args)
    path = stack_path(args, plan)
    try:
        user_data = read_stack(plan, path).instance(args.node).user_data
    except StackError as err:
        raise OpsError(f"{path}: {err}") from None
    print(unescape(user_data), end="")
    if refs := len(PORT_ADDRESS.findall(user_data)):
        note = f"{refs} addresses are Terraform references (${{element(...)}}): Neutron allocates them at deploy"
        print(f"note: {note}", file=sys.stderr)
    return Exit.OK


def check_cloud(args: argparse.Namespace, ssh: Ssh | None) -> Exit:
    """`preflight`: every problem the cloud would refuse at apply, before anything is created; every
    cluster CONFIG names (or the one --cluster chooses), each against its synthesized stack."""
    configs = load_configs(args.config or os.environ.get("CONFIG"))
    if args.cluster:
        configs = [c for c in configs if c.name == args.cluster]
        if not configs:
            raise OpsError(f"--cluster: {args.cluster!r} is not a cluster CONFIG names")
    if args.stack and len(configs) > 1:
        raise OpsError(f"--stack: one file, but CONFIG names {len(configs)} clusters; choose one with --cluster")
    checked = []
    for cfg in configs:
        plan = make_plan(cfg)
        path = stack_path(args, plan)
        checked.append((cfg, plan, read_stack(plan, path), path))
    try:
        # Terraform runs in the stack's folder: a clouds.yaml is looked for there, not here.
        source, session = openstack.connect(openstack.environment(), checked[0][3].parent.resolve())
    except openstack.CloudError as err:
        raise OpsError(str(err)) from None
    problems: list[tuple[str, preflight.Problem]] = []
    notes: list[str] = []
    for cfg, plan, stack, _ in checked:
        found, said = preflight.run(cfg, plan, stack, session)
        problems += [(plan.cluster, p) for p in found]
        notes += [f"{plan.cluster}: {n}" for n in said]
    several = len(checked) > 1
    if args.json:
        doc = {
            "cloud": source,
            "project_id": session.project_id,
            "clusters": [plan.cluster for _, plan, _, _ in checked],
            "ok": not problems,
            "checks": list(preflight.CHECKS),
            "problems": [{"cluster": c, **p.__dict__, "message": p.message} for c, p in problems],
            "notes": notes,
        }
        print(json.dumps(doc, indent=2))
    else:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        for cluster, problem in problems:
            print(f"{cluster}: {problem.message}" if several else problem.message)
        names = ", ".join(plan.cluster for _, plan, _, _ in checked)
        if problems:
            print(f"preflight: {len(problems)} problem(s) in {source}; nothing was created")
        else:
            print(f"preflight: {source} has what {names} needs ({len(preflight.CHECKS)} checks)")
    return Exit.REFUSED if problems else Exit.OK


def kubeadm_config(args: argparse.Namespace, ssh: Ssh | None) -> Exit:
    """The node's kubeadm configuration, as its user_data writes it (KUBEADM_CONFIG); a note on
    stderr where Terraform still fills in addresses, and where the join secrets go."""
    plan = cluster_plan(args)
    path = stack_path(args, plan)
    try:
        user_data = read_stack(plan, path).instance(args.node).user_data
        text = written_file_as_synthesized(user_data, KUBEADM_CONFIG)
    except (StackError, CloudConfigError) as err:
        raise OpsError(f"{path}: {err}") from None
    print(text, end="")
    if refs := len(PORT_ADDRESS.findall(text)) + len(FLOATING_IP_ADDRESS.findall(text)):
        note = f"{refs} addresses are Terraform references (${{...}}): Neutron allocates them at deploy"
        print(f"note: {note}", file=sys.stderr)
    if args.node != plan.init_node.name:
        print(
            f"note: the join secrets are placeholders; {KUBEADM_JOIN} fills them in from the environment",
            file=sys.stderr,
        )
    return Exit.OK


Command = Callable[[argparse.Namespace, Ssh | None], Exit]
COMMANDS: dict[str, Command] = {
    "status": status,
    "roll": roll,
    "userdata": userdata,
    "kubeadm-config": kubeadm_config,
    "preflight": check_cloud,
}


def main(argv: list[str] | None = None, ssh: Ssh | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, ssh)
    except (ConfigError, OpsError, EngineError) as err:
        code, message = Exit.BAD_INPUT, str(err)
    except RollStopped as err:
        code, message = Exit.STOPPED, str(err)
    except Exception:  # a bug, not a finding: its own code, so that no check reads it as "unhealthy"
        traceback.print_exc()
        code, message = (
            Exit.CRASHED,
            f"python -m ops {args.command} crashed (a bug in the tool; the traceback is above)",
        )
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
