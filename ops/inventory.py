"""What the synthesized stack says each node runs: its address, the files its userdata writes and
its two `docker run` lines. The JSON is the truth the tool rolls towards; the config only names it.

Addresses are literal in the JSON when the config gives them; Neutron-allocated ones are read from
the deployed stack's `node_addresses` output (`terraform output`, in the stack's folder).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.plan import Plan
from ops import OpsError
from tfcheck.engine import engine
from tfcheck.text import terraform_error
from userdata.render import CONTAINERS
from userdata.stack import Node, StackError, SynthesizedStack, read


@dataclass(frozen=True)
class Inventory:
    cluster: str
    vip: str
    interface: str
    health_port: int
    nodes: tuple[Node, ...]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


def stack_json_path(plan: Plan, root: Path) -> Path:
    return root / "cdktf.out" / "stacks" / plan.cluster / "cdk.tf.json"


def terraform_output(stack_dir: Path, name: str, hint: str, run=subprocess.run) -> Any:
    """One output of the deployed stack (`terraform output -json NAME` in the stack's folder, or
    `tofu ...` under ENGINE=tofu).

    `make synth` recreates the stack folder, so Terraform there may need `init` (backend only, as
    `cdktf deploy` does it) before it can read the state: tried once when the first read fails.
    """

    command = engine()

    def terraform(*args: str) -> subprocess.CompletedProcess[str]:
        try:
            return run([command, *args], cwd=stack_dir, capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise OpsError(f"{command}: command not found; it reads the deployed stack's {name}") from None

    done = terraform("output", "-no-color", "-json", name)
    if done.returncode != 0:
        terraform("init", "-input=false", "-no-color")
        done = terraform("output", "-no-color", "-json", name)
    if done.returncode != 0:
        raise OpsError(f"{command} output {name} in {stack_dir}: {terraform_error(done.stderr)} ({hint})")
    return json.loads(done.stdout)


def terraform_node_addresses(stack_dir: Path, run=subprocess.run) -> dict[str, str]:
    """The deployed stack's node_addresses output, by node name."""
    hint = "deploy first, or give every member an address in the config"
    return {str(k): str(v) for k, v in terraform_output(stack_dir, "node_addresses", hint, run).items()}


def terraform_floating_ip(stack_dir: Path, run=subprocess.run) -> str:
    """The deployed stack's floating IP (the kubeadm files name it among the certificate SANs)."""
    return str(terraform_output(stack_dir, "floating_ip", "deploy first: Neutron allocates the floating IP", run))


def read_stack(plan: Plan, stack_json: Path) -> SynthesizedStack:
    """The synthesized stack, checked to come from this config (the same nodes and VIP)."""
    try:
        stack = SynthesizedStack(read(stack_json))
        names = sorted(i.name for i in stack.instances)
    except FileNotFoundError:
        raise OpsError(f"{stack_json}: no such file; run `make synth` (CONFIG as for this cluster) first") from None
    except StackError as err:
        raise OpsError(f"{stack_json}: {err}") from None
    except ValueError as err:
        raise OpsError(f"{stack_json}: not JSON ({err})") from None
    if names != sorted(n.name for n in plan.nodes) or stack.outputs.get("vip") != plan.vip:
        raise OpsError(f"{stack_json} was not synthesized from this config (nodes or VIP differ); run `make synth`")
    return stack


def load_inventory(
    plan: Plan,
    stack_json: Path,
    node_addresses: Callable[[Path], dict[str, str]] = terraform_node_addresses,
    floating_ip: Callable[[Path], str] = terraform_floating_ip,
) -> Inventory:
    stack = read_stack(plan, stack_json)
    missing = [i.name for i in stack.instances if stack.literal_address(i) is None]
    allocated: dict[str, str] = {}
    if missing:
        deployed = node_addresses(Path(stack_json).parent)
        allocated = {name: deployed[name] for name in missing if name in deployed}
        if len(allocated) < len(missing):
            unknown = sorted(set(missing) - set(allocated))
            raise OpsError(f"the deployed stack's node_addresses output has no address for {', '.join(unknown)}")

    fip = floating_ip(Path(stack_json).parent) if stack.has_floating_ip else None
    nodes = []
    for node in plan.nodes:
        try:
            n = stack.node(stack.instance(node.name), allocated, fip)
        except StackError as err:
            raise OpsError(f"{stack_json}: {err}") from None
        if sorted(n.containers) != sorted(CONTAINERS):
            raise OpsError(
                f"{stack_json}: {node.name}: userdata runs {list(n.containers)}, expected {list(CONTAINERS)}"
            )
        nodes.append(n)
    return Inventory(plan.cluster, plan.vip, plan.interface, plan.health_port, tuple(nodes))
