"""The one reader of a synthesized cdk.tf.json: its resource types, `${...}` references, instances,
ports, security group rules, outputs, and each node as its user_data sets it up.

Only the JSON is trusted, never the Python objects that produced it. Every `${type.name.id}`
reference is resolved by type and name; what cannot be interpreted is an error naming the
resource, not a guess. Each part is read when first asked for, so a reader of the instances does
not depend on the shape of the rules. The cloud-config inside user_data is `userdata.cloudconfig`'s.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from userdata.cloudconfig import DockerRun, WrittenFile, docker_runs, unescape, written_files

INSTANCE = "openstack_compute_instance_v2"
PORT = "openstack_networking_port_v2"
SECGROUP = "openstack_networking_secgroup_v2"
RULE = "openstack_networking_secgroup_rule_v2"
VRRP = "112"

_REF = re.compile(r"^\$\{([A-Za-z0-9_]+)\.([A-Za-z0-9_-]+)\.id\}$")
# How the construct refers to a Neutron-allocated node address inside user_data.
PORT_ADDRESS = re.compile(rf"\$\{{element\({PORT}\.([A-Za-z0-9_-]+)\.all_fixed_ips, 0\)\}}")
FLOATINGIP = "openstack_networking_floatingip_v2"
# How the construct refers to the floating IP's address (the kubeadm files' certificate SANs).
FLOATING_IP_ADDRESS = re.compile(rf"\$\{{{FLOATINGIP}\.([A-Za-z0-9_-]+)\.address\}}")
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "vrrp": VRRP}


class StackError(ValueError):
    """The synthesized JSON says something its reader cannot interpret; the message names the resource."""


def read(path: Path | str) -> dict[str, Any]:
    """The JSON document; raises OSError or ValueError (not JSON) as reading and decoding do."""
    return json.loads(Path(path).read_text())


def protocol(value: object) -> str | None:
    """A rule's protocol by one name (VRRP as 112, TCP as tcp); None for any protocol."""
    if value in (None, "", "any"):
        return None
    text = str(value).lower()
    return _PROTOCOL_NAMES.get(text, text)


@dataclass(frozen=True)
class Rule:
    """One security group rule; protocol None means any protocol, ports None any port."""

    name: str
    secgroup: str
    direction: str
    protocol: str | None
    port_min: int | None
    port_max: int | None
    remote_prefix: str | None
    remote_group: str | None
    ethertype: str = "IPv4"
    description: str | None = None


@dataclass(frozen=True)
class Port:
    """A Neutron port: the addresses it may use and the groups that filter it."""

    resource: str
    name: str
    fixed_ips: tuple[str, ...]  # literal ones only: an address Neutron allocates is not in the JSON
    pairs: tuple[str, ...]
    secgroups: tuple[str, ...]
    port_security: bool

    @property
    def addresses(self) -> tuple[str, ...]:
        """What port security lets the port send from (and what remote groups contain)."""
        return self.fixed_ips + tuple(a for a in self.pairs if a not in self.fixed_ips)


@dataclass(frozen=True)
class SecGroup:
    resource: str
    name: str
    delete_default_rules: bool


@dataclass(frozen=True)
class Instance:
    """A VM resource: its Terraform name, VM name, the one port it is attached to, its user_data."""

    resource: str
    name: str
    port: str  # the port's resource name
    user_data: str  # as the JSON carries it: Terraform template text

    @property
    def where(self) -> str:
        return f"{INSTANCE}.{self.resource}"


@dataclass(frozen=True)
class Node:
    """A VM as its user_data sets it up: its port and address, the files it writes and the
    containers it runs (its `docker run` lines, by container name)."""

    name: str
    port: Port
    address: str
    files: tuple[WrittenFile, ...]
    user_data: str  # as the VM receives it: Terraform's escapes undone, addresses filled in
    containers: dict[str, DockerRun]

    @property
    def runs(self) -> tuple[DockerRun, ...]:
        return tuple(self.containers.values())

    def run(self, container: str) -> DockerRun:
        return self.containers[container]

    def file(self, path: str) -> WrittenFile:
        for f in self.files:
            if f.path == path:
                return f
        raise StackError(f"{self.name}: user_data writes no {path} (it writes {[f.path for f in self.files]})")


def with_port_addresses(user_data: str, addresses: Mapping[str, str]) -> str:
    """user_data with each port-address reference replaced by that port's address (keyed by port resource name)."""

    def address(match: re.Match[str]) -> str:
        if match.group(1) not in addresses:
            raise StackError(f"user_data refers to the address of port {match.group(1)}, which is not known")
        return addresses[match.group(1)]

    return PORT_ADDRESS.sub(address, user_data)


def with_floating_ip(user_data: str, floating_ip: str | None) -> str:
    """user_data with the floating IP's address reference replaced by its address."""
    if floating_ip is None:
        if FLOATING_IP_ADDRESS.search(user_data):
            raise StackError("user_data refers to the floating IP's address, which is not known")
        return user_data
    return FLOATING_IP_ADDRESS.sub(floating_ip, user_data)


class SynthesizedStack:
    """A cdk.tf.json document, read on demand; every error is a StackError naming the resource."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.resources: dict[str, dict[str, Any]] = doc.get("resource", {})

    def ref(self, value: object, want: str, where: str) -> str:
        """The resource name in a `${want.<name>.id}` reference to a resource of the JSON."""
        m = _REF.match(str(value))
        if not m or m.group(1) != want:
            raise StackError(f"{where}: expected a reference ${{{want}.<name>.id}}, got {value!r}")
        if m.group(2) not in self.resources.get(want, {}):
            raise StackError(f"{where}: {value!r} names no {want} in the JSON")
        return m.group(2)

    @property
    def outputs(self) -> dict[str, Any]:
        """Each output's value, by output name."""
        return {name: out.get("value") for name, out in self.doc.get("output", {}).items()}

    @cached_property
    def instances(self) -> tuple[Instance, ...]:
        """The VMs in VM name order."""
        out = []
        by_name = sorted(self.resources.get(INSTANCE, {}).items(), key=lambda kv: kv[1].get("name", kv[0]))
        for resource, inst in by_name:
            where = f"{INSTANCE}.{resource}"
            networks = inst.get("network", [])
            if len(networks) != 1 or "port" not in networks[0]:
                raise StackError(f"{where}: expected exactly one network block with a port, got {networks}")
            port = self.ref(networks[0]["port"], PORT, where)
            out.append(Instance(resource, inst.get("name", resource), port, inst.get("user_data", "")))
        return tuple(out)

    def instance(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        known = ", ".join(i.name for i in self.instances) or "none"
        raise StackError(f"no node is named {name!r}; its nodes: {known}")

    @cached_property
    def ports(self) -> dict[str, Port]:
        """The ports by resource name, in the JSON's order."""
        out = {}
        for resource, p in self.resources.get(PORT, {}).items():
            where = f"{PORT}.{resource}"
            out[resource] = Port(
                resource=resource,
                name=p.get("name", resource),
                fixed_ips=tuple(ip["ip_address"] for ip in p.get("fixed_ip", []) if ip.get("ip_address")),
                pairs=tuple(pair["ip_address"] for pair in p.get("allowed_address_pairs", [])),
                secgroups=tuple(self.ref(s, SECGROUP, where) for s in p.get("security_group_ids", [])),
                port_security=p.get("port_security_enabled", True),
            )
        return out

    @cached_property
    def secgroups(self) -> dict[str, SecGroup]:
        return {
            resource: SecGroup(resource, sg.get("name", resource), bool(sg.get("delete_default_rules", False)))
            for resource, sg in self.resources.get(SECGROUP, {}).items()
        }

    @cached_property
    def rules(self) -> tuple[Rule, ...]:
        out = []
        for name, r in self.resources.get(RULE, {}).items():
            where = f"{RULE}.{name}"
            remote_group = r.get("remote_group_id")
            out.append(
                Rule(
                    name=name,
                    secgroup=self.ref(r["security_group_id"], SECGROUP, where),
                    direction=r["direction"],
                    protocol=protocol(r.get("protocol")),
                    port_min=r.get("port_range_min"),
                    port_max=r.get("port_range_max"),
                    remote_prefix=r.get("remote_ip_prefix"),
                    remote_group=self.ref(remote_group, SECGROUP, where) if remote_group else None,
                    ethertype=r.get("ethertype", "IPv4"),
                    description=r.get("description"),
                )
            )
        return tuple(out)

    def literal_address(self, inst: Instance) -> str | None:
        """The instance's address where the JSON gives it (the config's), None where Neutron allocates it."""
        fixed = self.ports[inst.port].fixed_ips if inst.port in self.ports else ()
        return fixed[0] if fixed else None

    @property
    def has_floating_ip(self) -> bool:
        return bool(self.resources.get(FLOATINGIP))

    def node(self, inst: Instance, allocated: Mapping[str, str] | None = None, floating_ip: str | None = None) -> Node:
        """The instance as its user_data sets it up. `allocated` gives, by VM name, the addresses
        Neutron allocated, and `floating_ip` the floating IP's (the JSON only refers to them); the
        user_data's references to them are filled in before it is read."""
        allocated = allocated or {}
        by_port = {i.port: self.literal_address(i) or allocated.get(i.name) for i in self.instances}
        address = by_port[inst.port]
        if address is None:
            raise StackError(f"{inst.where}: its port has no literal address and none was given")
        try:
            text = with_port_addresses(inst.user_data, {p: a for p, a in by_port.items() if a})
            text = with_floating_ip(text, floating_ip)
            files = tuple(written_files(text).values())
            return Node(inst.name, self.ports[inst.port], address, files, unescape(text), docker_runs(text))
        except ValueError as err:
            raise StackError(f"{inst.where}: {err}") from None

    def nodes(self, allocated: Mapping[str, str] | None = None, floating_ip: str | None = None) -> tuple[Node, ...]:
        return tuple(self.node(inst, allocated, floating_ip) for inst in self.instances)


def user_data_by_node(doc: dict[str, Any]) -> dict[str, str]:
    """Each instance's user_data as the JSON carries it, keyed by the VM name."""
    return {inst.name: inst.user_data for inst in SynthesizedStack(doc).instances}


def with_user_data(doc: dict[str, Any], edit: Callable[[Instance], str]) -> dict[str, Any]:
    """A copy of the JSON in which each instance's user_data is `edit(instance)`, in VM name order."""
    out = copy.deepcopy(doc)
    for inst in SynthesizedStack(doc).instances:
        out["resource"][INSTANCE][inst.resource]["user_data"] = edit(inst)
    return out
