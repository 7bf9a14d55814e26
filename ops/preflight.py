"""Preflight: read the cloud as Terraform will, before anything is created, and refuse what would
fail at apply or break the design: every name the config gives, the router a floating IP needs,
Neutron's extensions and port security, the addresses (in the subnet, free, in no other port's
address pairs), the policy on fixed IPs and address pairs, the quotas, the flavor's size and the
user_data's.

Each problem is data (the config field, its value, what the cloud says, what to do); `message`
turns it into one line. A re-run on a deployed cluster passes: what this cluster already holds (its
ports, group, servers, server group, floating IP, found by the names the stack gives them) counts
as its own, not as taken, and is not asked of the quotas again.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cluster.config import ClusterConfig
from cluster.plan import Plan
from ops.openstack import ApiError, Session
from userdata.cloudconfig import unescape
from userdata.stack import INSTANCE, PORT, PORT_ADDRESS, RULE, SECGROUP, SynthesizedStack

SERVER_GROUP = "openstack_compute_servergroup_v2"
FLOATING_IP = "openstack_networking_floatingip_v2"
# kubeadm's preflight refuses a control-plane node with fewer CPUs or less memory than this.
KUBEADM_MIN_VCPUS = 2
KUBEADM_MIN_RAM_MB = 1700
# Nova's schema: user_data is base64 text of at most this many characters.
NOVA_USER_DATA_MAX = 65535
# Every new security group gets Neutron's two default egress rules (IPv4 and IPv6).
DEFAULT_RULES_PER_GROUP = 2
EXTENSIONS = {
    "port-security": "port_security_enabled on the node ports",
    "allowed-address-pairs": "the VIP as an allowed address pair on every node port",
}
ROUTER_INTERFACES = (
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
)
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    check: str  # which check found it (its name in CHECKS)
    field: str  # the config field (or the setting) it is about
    value: str
    cloud: str  # what the cloud says
    fix: str  # what to do

    @property
    def message(self) -> str:
        return f"{self.field}: {self.value} — {self.cloud}; {self.fix}"


@dataclass
class Preflight:
    """What the checks share: the config, its plan and stack, the session, and what earlier checks found."""

    cfg: ClusterConfig
    plan: Plan
    stack: SynthesizedStack
    cloud: Session
    network: dict[str, Any] | None = None
    subnet: dict[str, Any] | None = None
    flavor: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def names(self, resource_type: str) -> set[str]:
        """The names the stack gives its resources of one type: how this cluster's own are found."""
        return {str(r.get("name", k)) for k, r in self.stack.resources.get(resource_type, {}).items()}

    def count(self, resource_type: str) -> int:
        return len(self.stack.resources.get(resource_type, {}))

    def ports(self, **query: str) -> list[dict[str, Any]]:
        return self.cloud.get("network", "/ports", **query)["ports"]


def _one(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    return found[0] if len(found) == 1 else None


def check_network(pf: Preflight) -> Iterator[Problem]:
    net = pf.cfg.network
    fld, value = ("network.id", net.id) if net.id else ("network.name", net.name)
    if net.id:
        try:
            found = [pf.cloud.get("network", f"/networks/{net.id}")["network"]]
        except ApiError as err:
            if err.status != 404:
                raise
            found = []
    else:
        found = pf.cloud.get("network", "/networks", name=str(net.name))["networks"]
    if not found:
        yield Problem("network", fld, str(value), "no such network is visible to this project", "check the name")
        return
    if len(found) > 1:
        ids = ", ".join(n["id"] for n in found)
        yield Problem("network", fld, str(value), f"{len(found)} networks have this name ({ids})", "give network.id")
        return
    pf.network = found[0]
    owner = pf.network.get("project_id") or pf.network.get("tenant_id")
    if owner != pf.cloud.project_id and not pf.cloud.is_admin:
        yield Problem(
            "policy",
            fld,
            str(value),
            f"owned by project {owner}, not this one ({pf.cloud.project_id}): Neutron's default policy lets only "
            "the network's owner or an admin set fixed IPs and address pairs (403 at apply)",
            "use a network of this project, or deploy as an admin",
        )
    if pf.network.get("port_security_enabled") is False:
        yield Problem(
            "port-security",
            fld,
            str(value),
            "port security is off on this network: Neutron refuses address pairs on its ports (409 at apply)",
            "turn it on (openstack network set --enable-port-security) or use another network",
        )


def check_subnet(pf: Preflight) -> Iterator[Problem]:
    if pf.network is None:
        return
    sub = pf.cfg.network.subnet
    fld, value = ("network.subnet.id", sub.id) if sub.id else ("network.subnet.name", sub.name)
    query = {"network_id": pf.network["id"], **({"id": str(sub.id)} if sub.id else {"name": str(sub.name)})}
    found = pf.cloud.get("network", "/subnets", **query)["subnets"]
    if len(found) != 1:
        said = "no such subnet on this network" if not found else f"{len(found)} subnets have this name"
        yield Problem("subnet", fld, str(value), f"{said} ({pf.network['name']})", "check the subnet's name")
        return
    pf.subnet = found[0]
    if pf.subnet["cidr"] != str(sub.cidr):
        yield Problem(
            "subnet",
            "network.subnet.cidr",
            str(sub.cidr),
            f"subnet {pf.subnet['name'] or pf.subnet['id']} is {pf.subnet['cidr']}",
            "write the subnet's CIDR (every address is checked against it)",
        )
    gateway = pf.subnet.get("gateway_ip")
    if gateway and gateway != pf.plan.gateway:
        fld = "network.subnet.gateway" if sub.gateway else "network.subnet.gateway (unset: the first address)"
        yield Problem(
            "subnet",
            fld,
            pf.plan.gateway,
            f"the subnet's gateway is {gateway}: the survivor rule pings the gateway",
            f"set network.subnet.gateway: {gateway}",
        )


def check_extensions(pf: Preflight) -> Iterator[Problem]:
    aliases = {e["alias"] for e in pf.cloud.get("network", "/extensions")["extensions"]}
    for alias, why in EXTENSIONS.items():
        if alias not in aliases:
            yield Problem(
                "extensions",
                "network",
                alias,
                f"Neutron does not offer this extension, needed for {why}",
                "ask the cloud's operators to enable it (ML2: extension_drivers = port_security)",
            )


def _addresses(pf: Preflight) -> list[tuple[str, str, str]]:
    """(field, address, the port of this cluster that may hold it) for every address the config gives."""
    out = [("vip.address", str(pf.cfg.vip.address), f"{pf.plan.cluster}-vip")]
    for i, member in enumerate(pf.cfg.nodes.members or ()):
        if member.address is not None:
            out.append((f"nodes.members[{i}].address", str(member.address), f"{member.name}-port"))
    return out


def check_addresses(pf: Preflight) -> Iterator[Problem]:
    if pf.network is None or pf.subnet is None:
        return
    cidr = ipaddress.ip_network(pf.subnet["cidr"])
    own = pf.names(PORT)
    for fld, address, port_name in _addresses(pf):
        if ipaddress.ip_address(address) not in cidr:
            yield Problem("addresses", fld, address, f"outside subnet {pf.subnet['name']} ({cidr})", "use one inside")
            continue
        holders = pf.ports(network_id=pf.network["id"], fixed_ips=f"ip_address={address}")
        for port in holders:
            if port.get("name") != port_name:
                held_by = port.get("name") or port["id"]
                owner = port.get("device_owner") or "no device"
                yield Problem(
                    "addresses",
                    fld,
                    address,
                    f"already held by port {held_by} ({owner}): Neutron would refuse it (409 at apply)",
                    "choose a free address, or delete that port",
                )
    vip = ipaddress.ip_address(str(pf.cfg.vip.address))
    for port in pf.ports(network_id=pf.network["id"]):
        if port.get("name") in own:
            continue
        for pair in port.get("allowed_address_pairs") or ():
            if vip in ipaddress.ip_network(pair["ip_address"], strict=False):
                yield Problem(
                    "address-pairs",
                    "vip.address",
                    str(vip),
                    f"port {port.get('name') or port['id']} already carries it in its allowed address pairs "
                    f"({pair['ip_address']}): another VRRP group may claim the same VIP",
                    "choose another VIP, or remove that pair",
                )


def check_image(pf: Preflight) -> Iterator[Problem]:
    name = pf.cfg.nodes.image
    found = pf.cloud.get("image", "/images", name=name)["images"]
    if not found:
        yield Problem("image", "nodes.image", name, "no image of this name is visible to this project", "check it")
    elif len(found) > 1:
        yield Problem("image", "nodes.image", name, f"{len(found)} images have this name", "rename or hide one")
    elif found[0].get("status") != "active":
        yield Problem("image", "nodes.image", name, f"the image is {found[0].get('status')}", "use an active image")


def check_flavor(pf: Preflight) -> Iterator[Problem]:
    name = pf.cfg.nodes.flavor
    flavors = pf.cloud.get("compute", "/flavors/detail")["flavors"]
    found = [f for f in flavors if f["name"] == name]
    if len(found) != 1:
        said = "no flavor of this name" if not found else f"{len(found)} flavors have this name"
        known = ", ".join(sorted(f["name"] for f in flavors)[:10])
        yield Problem("flavor", "nodes.flavor", name, f"{said} (the cloud has: {known})", "check the name")
        return
    pf.flavor = found[0]
    vcpus, ram = pf.flavor["vcpus"], pf.flavor["ram"]
    if vcpus < KUBEADM_MIN_VCPUS or ram < KUBEADM_MIN_RAM_MB:
        yield Problem(
            "flavor",
            "nodes.flavor",
            name,
            f"{vcpus} vCPUs and {ram} MB: kubeadm needs at least {KUBEADM_MIN_VCPUS} vCPUs and "
            f"{KUBEADM_MIN_RAM_MB} MB on a control-plane node",
            "choose a larger flavor",
        )


def check_key_pair(pf: Preflight) -> Iterator[Problem]:
    name = pf.cfg.nodes.key_pair
    try:
        pf.cloud.get("compute", f"/os-keypairs/{name}")
    except ApiError as err:
        if err.status != 404:
            raise
        yield Problem("key-pair", "nodes.key_pair", name, "no key pair of this name for this user", "check it")


def check_floating_ip_pool(pf: Preflight) -> Iterator[Problem]:
    pool = pf.cfg.vip.floating_ip_pool
    if pool is None:
        return
    found = pf.cloud.get("network", "/networks", name=pool)["networks"]
    external = [n for n in found if n.get("router:external")]
    if not external:
        said = "a network of this name is not external" if found else "no network of this name"
        yield Problem("floating-ip-pool", "vip.floating_ip_pool", pool, said, "name an external network")
        return
    if pf.subnet is None:
        return
    routers = {r["id"]: r for r in pf.cloud.get("network", "/routers")["routers"]}
    gateways = {
        rid
        for rid, r in routers.items()
        if (r.get("external_gateway_info") or {}).get("network_id") in {n["id"] for n in external}
    }
    joined = [
        p
        for p in pf.ports(network_id=pf.subnet["network_id"], fixed_ips=f"subnet_id={pf.subnet['id']}")
        if p.get("device_owner") in ROUTER_INTERFACES and p.get("device_id") in gateways
    ]
    if not joined:
        yield Problem(
            "router",
            "vip.floating_ip_pool",
            pool,
            f"no router joins subnet {pf.subnet['name'] or pf.subnet['id']} to this network: Neutron refuses the "
            "floating IP (404 External network ... is not reachable from subnet, at apply)",
            "add a router with its gateway on the pool and an interface on the subnet",
        )


def check_extra_security_groups(pf: Preflight) -> Iterator[Problem]:
    for i, group in enumerate(pf.cfg.nodes.extra_security_groups):
        fld = f"nodes.extra_security_groups[{i}]"
        if _UUID.match(group):
            try:
                pf.cloud.get("network", f"/security-groups/{group}")
                continue
            except ApiError as err:
                if err.status != 404:
                    raise
        by_name = pf.cloud.get("network", "/security-groups", name=group)["security_groups"]
        if len(by_name) == 1:
            yield Problem(
                "security-groups",
                fld,
                group,
                f"a group's name; ports take its id ({by_name[0]['id']})",
                f"write {by_name[0]['id']}",
            )
        else:
            yield Problem("security-groups", fld, group, "no security group with this id", "check it")


def _quota_problem(what: str, field_: str, need: int, limit: int, used: int, fix: str) -> Problem | None:
    if limit < 0 or used + need <= limit:
        return None
    return Problem(
        "quotas",
        field_,
        f"{need} more {what}",
        f"the project's quota is {limit}, {used} in use: {limit - used} left",
        fix,
    )


def check_quotas(pf: Preflight) -> Iterator[Problem]:
    yield from _network_quotas(pf)
    yield from _compute_quotas(pf)


def _network_quotas(pf: Preflight) -> Iterator[Problem]:
    try:
        quota = pf.cloud.get("network", f"/quotas/{pf.cloud.project_id}/details")["quota"]
    except ApiError as err:
        pf.notes.append(f"network quotas not checked: {err}")
        return
    own_ports = [p for p in pf.ports() if p.get("name") in pf.names(PORT)]
    groups = [
        g for g in pf.cloud.get("network", "/security-groups")["security_groups"] if g["name"] in pf.names(SECGROUP)
    ]
    own_rules = sum(len(g.get("security_group_rules") or ()) for g in groups)
    own_ips = {p["id"] for p in own_ports}
    fips = [f for f in pf.cloud.get("network", "/floatingips")["floatingips"] if f.get("port_id") in own_ips]
    needs = {
        "port": ("ports", pf.count(PORT) - len(own_ports), "nodes.count"),
        "security_group": ("security groups", pf.count(SECGROUP) - len(groups), "name"),
        "security_group_rule": (
            "security group rules",
            pf.count(RULE) + DEFAULT_RULES_PER_GROUP * pf.count(SECGROUP) - own_rules,
            "access",
        ),
        "floatingip": ("floating IPs", pf.count(FLOATING_IP) - len(fips), "vip.floating_ip_pool"),
    }
    for key, (what, need, fld) in needs.items():
        q = quota.get(key)
        if need > 0 and q is not None:
            used = int(q.get("used", 0)) + int(q.get("reserved", 0))
            if p := _quota_problem(what, fld, need, int(q["limit"]), used, "raise the quota or free some"):
                yield p


def _compute_quotas(pf: Preflight) -> Iterator[Problem]:
    absolute = pf.cloud.get("compute", "/limits")["limits"]["absolute"]
    names = pf.names(INSTANCE)
    servers = [s for s in pf.cloud.get("compute", "/servers/detail")["servers"] if s["name"] in names]
    groups = [
        g for g in pf.cloud.get("compute", "/os-server-groups")["server_groups"] if g["name"] in pf.names(SERVER_GROUP)
    ]
    new = pf.count(INSTANCE) - len(servers)
    fix = "raise the quota, or choose a smaller flavor or fewer nodes"
    checks = [("instances", "nodes.count", new, "maxTotalInstances", "totalInstancesUsed")]
    if pf.flavor is not None:
        checks += [
            ("vCPUs", "nodes.flavor", new * pf.flavor["vcpus"], "maxTotalCores", "totalCoresUsed"),
            ("MB of RAM", "nodes.flavor", new * pf.flavor["ram"], "maxTotalRAMSize", "totalRAMUsed"),
        ]
    checks.append(
        (
            "server groups",
            "nodes.anti_affinity",
            pf.count(SERVER_GROUP) - len(groups),
            "maxServerGroups",
            "totalServerGroupsUsed",
        )
    )
    for what, fld, need, limit, used in checks:
        if need > 0 and limit in absolute:
            if p := _quota_problem(what, fld, need, int(absolute[limit]), int(absolute.get(used, 0)), fix):
                yield p
    members = absolute.get("maxServerGroupMembers")
    if members is not None and 0 <= int(members) < pf.count(INSTANCE):
        yield Problem(
            "quotas",
            "nodes.count",
            str(pf.count(INSTANCE)),
            f"a server group may hold {members} members in this project",
            "raise the server_group_members quota",
        )


def check_user_data(pf: Preflight) -> Iterator[Problem]:
    for inst in pf.stack.instances:
        # Neutron's addresses in place of Terraform's references: at most 15 characters each.
        text = PORT_ADDRESS.sub("255.255.255.255", unescape(inst.user_data))
        size = len(base64.b64encode(text.encode()))
        if size > NOVA_USER_DATA_MAX:
            yield Problem(
                "user-data",
                f"nodes ({inst.name})",
                f"{size} characters of base64 user_data",
                f"Nova takes at most {NOVA_USER_DATA_MAX}",
                "fewer nodes, or give members addresses",
            )


Check = Callable[[Preflight], Iterator[Problem]]
# In order: later checks read what earlier ones found (the network, the subnet, the flavor).
CHECKS: dict[str, Check] = {
    "network": check_network,
    "subnet": check_subnet,
    "extensions": check_extensions,
    "addresses": check_addresses,
    "image": check_image,
    "flavor": check_flavor,
    "key-pair": check_key_pair,
    "floating-ip-pool": check_floating_ip_pool,
    "security-groups": check_extra_security_groups,
    "quotas": check_quotas,
    "user-data": check_user_data,
}


def run(cfg: ClusterConfig, plan: Plan, stack: SynthesizedStack, cloud: Session) -> tuple[list[Problem], list[str]]:
    """Every problem found, and notes on what could not be checked."""
    pf = Preflight(cfg, plan, stack, cloud)
    problems: list[Problem] = []
    for name, check in CHECKS.items():
        try:
            problems.extend(check(pf))
        except ApiError as err:
            pf.notes.append(f"{name}: not checked ({err})")
    return problems, pf.notes
