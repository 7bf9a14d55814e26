"""What the synthesized stack says each node runs: its address, the files its userdata writes and
its two `docker run` lines. The JSON is the truth the tool rolls towards; the config only names it.

Addresses are literal in the JSON when the config gives them; Neutron-allocated ones are read from
the deployed stack's `node_addresses` output (`terraform output`, in the stack's folder).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.plan import Plan
from ops import OpsError
from userdata.extract import INSTANCE_TYPE, DockerRun, WrittenFile, docker_runs, with_port_addresses, written_files
from userdata.render import CONTAINERS

PORT_TYPE = "openstack_networking_port_v2"
_PORT_REF = re.compile(rf"^\$\{{{PORT_TYPE}\.([A-Za-z0-9_-]+)\.id\}}$")


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    files: tuple[WrittenFile, ...]
    runs: tuple[DockerRun, ...]

    def run(self, container: str) -> DockerRun:
        return next(r for r in self.runs if r.name == container)


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


def terraform_node_addresses(stack_dir: Path, run=subprocess.run) -> dict[str, str]:
    """The deployed stack's node_addresses output, by node name.

    `make synth` recreates the stack folder, so Terraform there may need `init` (backend only, as
    `cdktf deploy` does it) before it can read the state: tried once when the first read fails.
    """

    def terraform(*args: str) -> subprocess.CompletedProcess[str]:
        try:
            return run(["terraform", *args], cwd=stack_dir, capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise OpsError("terraform: command not found; it reads the node addresses Neutron allocated") from None

    done = terraform("output", "-no-color", "-json", "node_addresses")
    if done.returncode != 0:
        terraform("init", "-input=false", "-no-color")
        done = terraform("output", "-no-color", "-json", "node_addresses")
    if done.returncode != 0:
        raise OpsError(
            f"terraform output node_addresses in {stack_dir}: {terraform_error(done.stderr)} "
            "(deploy first, or give every member an address in the config)"
        )
    return {str(k): str(v) for k, v in json.loads(done.stdout).items()}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOX = "╷│╵"


def terraform_error(stderr: str) -> str:
    """Terraform's first error as one line: its summary and the detail's first sentence.

    Without colour Terraform prints `Error: <summary>`, a blank line and the detail; a coloured one
    is drawn in a box (and escape codes), stripped here too in case `-no-color` was not honoured.
    """
    lines = [_ANSI.sub("", line).strip().strip(_BOX).strip() for line in stderr.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            detail: list[str] = []
            for more in lines[i + 1 :]:
                if more.startswith(("Error:", "Warning:")) or (not more and detail):
                    break
                if more:
                    detail.append(more)
            sentence = re.split(r"(?<=[.!?])\s", " ".join(detail), maxsplit=1)[0]
            return f"{line} — {sentence}" if sentence else line
    text = " ".join(line for line in lines if line)
    return text or "failed"


def load_inventory(
    plan: Plan, stack_json: Path, node_addresses: Callable[[Path], dict[str, str]] = terraform_node_addresses
) -> Inventory:
    try:
        doc = json.loads(Path(stack_json).read_text())
    except FileNotFoundError:
        raise OpsError(f"{stack_json}: no such file; run `make synth` (CONFIG as for this cluster) first") from None
    except ValueError as err:
        raise OpsError(f"{stack_json}: not JSON ({err})") from None
    resources = doc.get("resource", {})
    instances = {vm["name"]: vm for vm in resources.get(INSTANCE_TYPE, {}).values()}
    vip = doc.get("output", {}).get("vip", {}).get("value")
    if sorted(instances) != sorted(n.name for n in plan.nodes) or vip != plan.vip:
        raise OpsError(f"{stack_json} was not synthesized from this config (nodes or VIP differ); run `make synth`")

    port_of = {}
    for name, vm in instances.items():
        ref = _PORT_REF.match(str(vm.get("network", [{}])[0].get("port", "")))
        if not ref:
            raise OpsError(f"{stack_json}: instance {name} is not attached to one {PORT_TYPE}")
        port_of[name] = ref.group(1)
    ports = resources.get(PORT_TYPE, {})
    literal = {name: ports.get(port, {}).get("fixed_ip", [{}])[0].get("ip_address") for name, port in port_of.items()}
    addresses = {k: v for k, v in literal.items() if v}
    if len(addresses) < len(instances):
        deployed = node_addresses(Path(stack_json).parent)
        addresses.update({name: deployed[name] for name in instances if name not in addresses and name in deployed})
        missing = sorted(set(instances) - set(addresses))
        if missing:
            raise OpsError(f"the deployed stack's node_addresses output has no address for {', '.join(missing)}")

    nodes = []
    for node in plan.nodes:
        user_data = with_port_addresses(instances[node.name]["user_data"], {port_of[n]: a for n, a in addresses.items()})
        try:
            files = tuple(written_files(user_data).values())
            runs = tuple(docker_runs(user_data).values())
        except ValueError as err:
            raise OpsError(f"{stack_json}: {node.name}: {err}") from None
        if sorted(str(r.name) for r in runs) != sorted(CONTAINERS):
            raise OpsError(f"{stack_json}: {node.name}: userdata runs {[r.name for r in runs]}, expected {list(CONTAINERS)}")
        nodes.append(Node(node.name, addresses[node.name], files, runs))
    return Inventory(plan.cluster, plan.vip, plan.interface, plan.health_port, tuple(nodes))
