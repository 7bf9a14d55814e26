"""The loopback cloud's tenant network in namespaces, built from what the real Neutron holds.

The lab's `topology` builds a network from the synthesized JSON; this one reads Neutron's API (as
the service user, what Neutron's agents learn over RPC): the subnet and its gateway, the router
with its external address and floating IPs, each server port's fixed IP, MAC, allowed address
pairs and security groups, and every security-group rule as Neutron stored it. `refresh()` reads
them again and rewrites the firewall (`lab.world.neutron`) and the router's NAT when they changed;
the hypervisor calls it every second, so a later `cdktf deploy` takes effect as it would on a
cloud whose agents get Neutron's notifications.

What it builds, all named `khc-` (not the lab's `kha-`: a lab's clean-up leaves the cloud alone):
- `khc-net`: the tenant bridge `khc-br` and the external bridge `khc-ext`, and the firewall;
- `khc-router`: the router, on both bridges at the addresses Neutron gave its ports; it routes,
  masquerades the subnet towards the external network (SNAT, as Neutron's router does) and maps
  each floating IP to its fixed IP (DNAT in, SNAT out), answering ARP for it on the external side;
- `khc-client`: a client with a Neutron port on the tenant network and one on the external
  network (both made here, without port security), so it reaches the VIP directly and, sending
  from its external address (routed through the router), as a host outside: through a floating IP,
  or to the VIP once a security-group rule admits that address;
- `khc-admin`: the administrators' network beyond the router (`lab.world.admin`), at the first
  address of ADMIN_PREFIX, which config/example.yaml's access.admin_cidrs admits;
- one namespace per server port (`attach`), its NIC named NIC with Neutron's address and MAC.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from cloud.compute import Neutron
from lab.world import neutron
from lab.world.admin import AdminNetwork
from lab.world.synth import Port, Rule, members
from lab.world.topology import in_ns, lab_namespaces, remove_ns, run, wire
from userdata.stack import protocol

PREFIX = "khc-"
NET_NS = PREFIX + "net"
ROUTER_NS = PREFIX + "router"
CLIENT_NS = PREFIX + "client"
ADMIN_NS = PREFIX + "admin"
TENANT_BR = PREFIX + "br"
EXTERNAL_BR = PREFIX + "ext"
WORKDIR_PREFIX = PREFIX + "cloud-"
# The first NIC's name in the VM: Ubuntu's cloud image on KVM names the virtio NIC in PCI slot 3 so
# (config/example.yaml: network.interface).
NIC = "ens3"
CLIENT_PORT = "kha-client"
CLIENT_EXTERNAL_PORT = "kha-client-external"
CLIENT_HOST = 200  # the client's host number on either subnet (.200 of a /24)
ADMIN_PREFIX = "198.51.100.0/24"
NAT_TABLE = "khc-nat"


class TenantError(RuntimeError):
    """Neutron does not hold what the tenant network is built from."""


@dataclass(frozen=True)
class Held:
    """What Neutron holds that the firewall and the router are made of (`neutron.Filters`)."""

    ports: tuple[Port, ...]  # every port on the tenant network, `resource` its Neutron id
    rules: tuple[Rule, ...]  # IPv4 only, as in the lab
    floating: tuple[tuple[str, str], ...]  # (floating IP, fixed IP) of each associated floating IP
    open_egress: frozenset[str] = frozenset()  # Neutron lists the default egress rules: none is implied

    def members(self, secgroup: str) -> tuple[str, ...]:
        return members(self.ports, secgroup)

    def port(self, port_id: str) -> Port:
        for p in self.ports:
            if p.resource == port_id:
                return p
        raise TenantError(f"port {port_id}: not on the tenant network")


def held_from(ports: list[dict[str, Any]], rules: list[dict[str, Any]], floating: list[dict[str, Any]]) -> Held:
    """Neutron's API answers (ports of one network, security-group rules, floating IPs) as `Held`."""
    return Held(
        ports=tuple(
            Port(
                resource=p["id"],
                name=p.get("name") or p["id"],
                fixed_ips=tuple(ip["ip_address"] for ip in p.get("fixed_ips", []) if ":" not in ip["ip_address"]),
                pairs=tuple(a["ip_address"] for a in p.get("allowed_address_pairs", [])),
                secgroups=tuple(p.get("security_groups", [])),
                port_security=bool(p.get("port_security_enabled", True)),
            )
            for p in ports
        ),
        rules=tuple(
            Rule(
                name=r["id"],
                secgroup=r["security_group_id"],
                direction=r["direction"],
                protocol=protocol(r.get("protocol")),
                port_min=r.get("port_range_min"),
                port_max=r.get("port_range_max"),
                remote_prefix=r.get("remote_ip_prefix"),
                remote_group=r.get("remote_group_id"),
                ethertype=r.get("ethertype", "IPv4"),
            )
            for r in rules
            if r.get("ethertype", "IPv4") == "IPv4"
        ),
        floating=tuple(
            sorted(
                (f["floating_ip_address"], f["fixed_ip_address"])
                for f in floating
                if f.get("port_id") and f.get("fixed_ip_address")
            )
        ),
    )


def nat_ruleset(cidr: str, external_if: str, floating: tuple[tuple[str, str], ...]) -> str:
    """The router's NAT: each floating IP to its fixed IP and back, the rest of the subnet masqueraded."""
    pre = [f"    ip daddr {fip} dnat to {fixed}" for fip, fixed in floating]
    post = [f'    ip saddr {fixed} oifname "{external_if}" snat to {fip}' for fip, fixed in floating]
    post.append(f'    ip saddr {cidr} oifname "{external_if}" masquerade')
    return "\n".join(
        [
            f"table ip {NAT_TABLE}",
            f"delete table ip {NAT_TABLE}",
            f"table ip {NAT_TABLE} {{",
            "  chain prerouting {",
            "    type nat hook prerouting priority -100; policy accept;",
            *pre,
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority 100; policy accept;",
            *post,
            "  }",
            "}",
            "",
        ]
    )


@dataclass
class Attached:
    """A server port wired to the tenant bridge: its namespace and the bridge end of its veth."""

    port_id: str
    ns: str
    ifname: str
    mac: str
    address: str
    tag: int


@dataclass
class Tenant:
    """The tenant network of `network` (a name) and its router, as Neutron holds them."""

    api: Neutron
    network: str
    attached: dict[str, Attached] = field(default_factory=dict)  # by port id
    cut_ports: set[str] = field(default_factory=set)  # bridge ifnames
    held: Held | None = None
    _applied: tuple[str, str] = ("", "")
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _tags: set[int] = field(default_factory=set)
    _floating_up: set[str] = field(default_factory=set)

    def _get(self, path: str, key: str) -> Any:
        status, data = self.api.call("GET", path)
        if status != 200:
            raise TenantError(f"Neutron GET {path}: {status} {data}")
        return data[key]

    def _one(self, kind: str, query: str, what: str) -> dict[str, Any]:
        found = self._get(f"{kind}?{query}", kind.replace("-", "_"))
        if len(found) != 1:
            raise TenantError(f"{what}: Neutron holds {len(found)} ({query})")
        return found[0]

    # --- building -------------------------------------------------------------------------
    def up(self) -> None:
        net = self._one("networks", f"name={self.network}", f"network {self.network}")
        self.network_id = net["id"]
        subnet = self._one("subnets", f"network_id={net['id']}&ip_version=4", f"{self.network}'s IPv4 subnet")
        self.cidr, self.gateway = subnet["cidr"], subnet["gateway_ip"]
        self.prefixlen = ipaddress.ip_network(self.cidr).prefixlen
        inner = self._one(
            "ports", f"network_id={net['id']}&device_owner=network:router_interface", f"{self.network}'s router port"
        )
        router = self._get(f"routers/{inner['device_id']}", "router")
        gateway = router.get("external_gateway_info") or {}
        if not gateway.get("external_fixed_ips"):
            raise TenantError(f"router {router['name']}: no external gateway")
        self.external_id = gateway["network_id"]
        external_subnet = self._get(f"subnets/{gateway['external_fixed_ips'][0]['subnet_id']}", "subnet")
        self.external_cidr = external_subnet["cidr"]
        self.router_external = gateway["external_fixed_ips"][0]["ip_address"]
        self.client = self._client_port(CLIENT_PORT, self.network_id, self.cidr)
        self.client_external = self._client_port(CLIENT_EXTERNAL_PORT, self.external_id, self.external_cidr)

        run(["ip", "netns", "add", NET_NS])
        run(in_ns(NET_NS, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"]))
        _no_ipv6(NET_NS)
        for br in (TENANT_BR, EXTERNAL_BR):
            run(["ip", "-n", NET_NS, "link", "add", br, "type", "bridge"])
            run(["ip", "-n", NET_NS, "link", "set", br, "up"])
        self.refresh()
        run(["ip", "netns", "add", ROUTER_NS])
        _no_ipv6(ROUTER_NS)
        run(in_ns(ROUTER_NS, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        outer = self._one(
            "ports", f"device_id={router['id']}&device_owner=network:router_gateway", f"{router['name']}'s gateway port"
        )
        ext_mac = outer["mac_address"]
        self._veth(ROUTER_NS, "qr", TENANT_BR, PREFIX + "r0", inner["mac_address"], f"{self.gateway}/{self.prefixlen}")
        ext_prefix = ipaddress.ip_network(self.external_cidr).prefixlen
        self._veth(ROUTER_NS, "qg", EXTERNAL_BR, PREFIX + "r1", ext_mac, f"{self.router_external}/{ext_prefix}")
        run(["ip", "netns", "add", CLIENT_NS])
        _no_ipv6(CLIENT_NS)
        self._veth(CLIENT_NS, "eth0", TENANT_BR, PREFIX + "c0", self.client[1], f"{self.client[0]}/{self.prefixlen}")
        self._veth(
            CLIENT_NS,
            "eth1",
            EXTERNAL_BR,
            PREFIX + "c1",
            self.client_external[1],
            f"{self.client_external[0]}/{ext_prefix}",
        )
        # From its external address the client is a host on the external network: everything it
        # sends from there goes through the router (to a floating IP, or routed to the subnet).
        run(["ip", "-n", CLIENT_NS, "rule", "add", "from", self.client_external[0], "table", "100"])
        run(["ip", "-n", CLIENT_NS, "route", "add", "default", "via", self.router_external, "table", "100"])
        run(in_ns(CLIENT_NS, ["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth1.rp_filter=0"]))
        self.admin = AdminNetwork(ADMIN_PREFIX, ROUTER_NS, self.gateway, ns=ADMIN_NS, router_if=PREFIX + "va")
        self.admin.up()
        self.refresh()

    def _client_port(self, name: str, network_id: str, cidr: str) -> tuple[str, str]:
        """The client's Neutron port on a network, at the subnet's CLIENT_HOST: (address, MAC)."""
        address = str(list(ipaddress.ip_network(cidr).hosts())[CLIENT_HOST - 1])
        for old in self._get(f"ports?name={name}", "ports"):
            self.api.call("DELETE", f"ports/{old['id']}")
        status, data = self.api.call(
            "POST",
            "ports",
            {
                "port": {
                    "name": name,
                    "network_id": network_id,
                    "fixed_ips": [{"ip_address": address}],
                    "port_security_enabled": False,
                    "device_owner": "kha:client",
                }
            },
        )
        if status != 201:
            raise TenantError(f"Neutron refused the client's port {name} at {address}: {status} {data}")
        return address, data["port"]["mac_address"]

    def _veth(self, ns: str, inner: str, bridge: str, outer: str, mac: str, cidr: str) -> None:
        wire(NET_NS, bridge, outer, ns, inner, mac, cidr)

    # --- what Neutron holds ----------------------------------------------------------------
    def read(self) -> Held:
        return held_from(
            self._get(f"ports?network_id={self.network_id}", "ports"),
            self._get("security-group-rules", "security_group_rules"),
            self._get("floatingips", "floatingips"),
        )

    def refresh(self) -> bool:
        """Read Neutron again; rewrite the firewall and the router's NAT where they changed."""
        held = self.read()
        with self._lock:
            self.held = held
            wirings = [
                neutron.Wiring(held.port(a.port_id), a.ifname, a.mac, a.tag)
                for a in self.attached.values()
                if any(p.resource == a.port_id for p in held.ports)
            ]
            firewall = neutron.ruleset(held, wirings)
            nat = nat_ruleset(self.cidr, "qg", held.floating)
            if (firewall, nat) == self._applied:
                return False
            if firewall != self._applied[0]:
                run(in_ns(NET_NS, ["nft", "-f", "-"]), input=firewall)
                for ifname in self.cut_ports:
                    run(in_ns(NET_NS, neutron.cut_command(ifname, True)))
            if nat != self._applied[1] and _exists(ROUTER_NS):
                run(in_ns(ROUTER_NS, ["nft", "-f", "-"]), input=nat)
                fips = {fip for fip, _ in held.floating}
                for fip in fips - self._floating_up:
                    run(["ip", "-n", ROUTER_NS, "addr", "add", f"{fip}/32", "dev", "qg"])
                for fip in self._floating_up - fips:
                    run(["ip", "-n", ROUTER_NS, "addr", "del", f"{fip}/32", "dev", "qg"], check=False)
                self._floating_up = fips
            else:
                nat = self._applied[1]
            self._applied = (firewall, nat)
            return True

    # --- server ports ----------------------------------------------------------------------
    def attach(self, port_id: str, ns: str) -> Attached:
        """The port's namespace, its NIC on the bridge with Neutron's MAC and fixed IP and the
        default route via the subnet's gateway (what DHCP would hand the VM); filtered from the start."""
        port = self._get(f"ports/{port_id}", "port")
        if port["network_id"] != self.network_id:
            raise TenantError(f"port {port_id} is on network {port['network_id']}, not {self.network}: not wired")
        address = next(ip["ip_address"] for ip in port["fixed_ips"] if ":" not in ip["ip_address"])
        with self._lock:
            tag = min(set(range(1, 256)) - self._tags)
            self._tags.add(tag)
            a = Attached(port_id, ns, f"{PREFIX}p{tag}", port["mac_address"], address, tag)
            self.attached[port_id] = a
        run(["ip", "netns", "add", ns])
        _no_ipv6(ns)
        self.cut_ports.add(a.ifname)  # silent until the firewall knows the port
        self._veth(ns, NIC, TENANT_BR, a.ifname, a.mac, f"{address}/{self.prefixlen}")
        self.route_default(a)
        self._applied = ("", self._applied[1])
        self.refresh()
        self.cut(a, False)
        return a

    def detach(self, a: Attached) -> None:
        remove_ns(a.ns)
        with self._lock:
            self.attached.pop(a.port_id, None)
            self._tags.discard(a.tag)
            self.cut_ports.discard(a.ifname)
            self._applied = ("", self._applied[1])
        self.refresh()

    def cut(self, a: Attached, cut: bool = True) -> None:
        with self._lock:
            (self.cut_ports.add if cut else self.cut_ports.discard)(a.ifname)
            run(in_ns(NET_NS, neutron.cut_command(a.ifname, cut)), check=False)

    def route_default(self, a: Attached) -> None:
        run(["ip", "-n", a.ns, "route", "replace", "default", "via", self.gateway])

    def reset_addresses(self, a: Attached) -> None:
        """The NIC as at boot: its own address only (a VIP held in memory is gone)."""
        run(["ip", "-n", a.ns, "addr", "flush", "dev", NIC])
        run(["ip", "-n", a.ns, "addr", "add", f"{a.address}/{self.prefixlen}", "dev", NIC])
        self.route_default(a)

    def addresses(self, a: Attached) -> list[str]:
        out = run(["ip", "-n", a.ns, "-4", "-o", "addr", "show", "dev", NIC]).stdout
        return re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)

    def down(self) -> None:
        for a in list(self.attached.values()):
            remove_ns(a.ns)
        for ns in (ADMIN_NS, CLIENT_NS, ROUTER_NS, NET_NS):
            remove_ns(ns)
        for name in (CLIENT_PORT, CLIENT_EXTERNAL_PORT):
            try:
                for old in self._get(f"ports?name={name}", "ports"):
                    self.api.call("DELETE", f"ports/{old['id']}")
            except (TenantError, OSError):
                pass


@dataclass(frozen=True)
class NodeWire:
    """One attached port as a lab node's power sees its link (`lab.world.node.Wire`)."""

    tenant: Tenant
    attached: Attached

    def cut(self, node: str, cut: bool = True) -> None:
        self.tenant.cut(self.attached, cut)

    def reset_addresses(self, node: str) -> None:
        self.tenant.reset_addresses(self.attached)


def _no_ipv6(ns: str) -> None:
    run(in_ns(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]))


def _exists(ns: str) -> bool:
    return ns in run(["ip", "netns", "list"], check=False).stdout.split()


def leftovers() -> list[str]:
    """The cloud's namespaces that exist now (none once the cloud has stopped)."""
    return lab_namespaces(PREFIX)
