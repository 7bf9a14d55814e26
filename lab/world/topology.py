"""Namespaces, the bridge and the veths that stand in for the tenant network and its ports.

Everything the lab creates is named with the prefix `kha-`, so `cleanup()` can remove what a
crashed run left behind without knowing what it was. The bridge lives in its own namespace
(`kha-net`) rather than on the host: its firewall then holds only the lab's rules, and the host's
own ruleset and sysctls cannot leak into the lab (or the lab's into the host).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.world import neutron
from lab.world.engine import CGROUP_ROOT, remove_cgroups
from lab.world.synth import Stack

PREFIX = "kha-"
NET_NS = "kha-net"
CLIENT_NS = "kha-client"
GATEWAY_NS = "kha-gateway"
BRIDGE = "kha-br"
CLIENT_IF = "kha-vc"
GATEWAY_IF = "kha-vg"
WORKDIR_PREFIX = "kha-lab-"
WORKDIR_PARENT = Path("/tmp")
# Neutron's MAC prefix, so that captures look like the real thing.
_MAC = "fa:16:3e:00:00:{:02x}"


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, returning its output; raise with its stderr when it fails and `check`."""
    done = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def wire(net_ns: str, bridge: str, outer: str, ns: str, inner: str, mac: str, cidr: str) -> None:
    """A veth from `bridge` (in `net_ns`) to namespace `ns` (which exists), its inner end `inner`
    with `mac` and the address `cidr`, both ends up."""
    link = ["link", "add", outer, "type", "veth", "peer", "name", inner, "address", mac, "netns", ns]
    run(["ip", "-n", net_ns, *link])
    run(["ip", "-n", net_ns, "link", "set", outer, "master", bridge, "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", inner])
    run(["ip", "-n", ns, "link", "set", inner, "up"])


def node_ns(name: str) -> str:
    return PREFIX + "n-" + re.sub(r"[^A-Za-z0-9-]", "-", name)


@dataclass(frozen=True)
class Endpoint:
    """One namespace on the bridge: its interface inside and the veth end on the bridge."""

    ns: str
    inner: str
    ifname: str
    mac: str
    address: str


class Topology:
    """The namespaces and links for a stack; `up()` builds them, `down()` removes them."""

    def __init__(self, stack: Stack, interfaces: dict[str, str], gateway: str | None = None):
        prefixlen = ipaddress.ip_network(stack.subnet).prefixlen
        self.stack = stack
        self.prefixlen = prefixlen
        self.nodes = {
            n.name: Endpoint(node_ns(n.name), interfaces[n.name], f"{PREFIX}v{i}", _MAC.format(i + 1), n.address)
            for i, n in enumerate(stack.nodes)
        }
        taken = (gateway,) if gateway else ()
        self.client = Endpoint(CLIENT_NS, "eth0", CLIENT_IF, _MAC.format(0xC0), stack.client_address(taken))
        # The subnet's router: the nodes' default route, and what their network check pings; a port
        # without port security.
        self.gateway = Endpoint(GATEWAY_NS, "eth0", GATEWAY_IF, _MAC.format(0xFE), gateway) if gateway else None
        self.wirings = [
            neutron.Wiring(n.port, self.nodes[n.name].ifname, self.nodes[n.name].mac, i + 1)
            for i, n in enumerate(stack.nodes)
        ]

    def up(self) -> None:
        run(["ip", "netns", "add", NET_NS])
        self._sysctls(NET_NS, ["net.bridge.bridge-nf-call-iptables=1"])
        run(["ip", "-n", NET_NS, "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "-n", NET_NS, "link", "set", BRIDGE, "up"])
        self.apply_firewall()
        for ep in self._endpoints():
            self._attach(ep)
        for name in self.nodes:
            self.route_default(name)

    def _endpoints(self) -> list[Endpoint]:
        return [*self.nodes.values(), self.client, *([self.gateway] if self.gateway else [])]

    def _sysctls(self, ns: str, extra: list[str]) -> None:
        # IPv6 off: the JSON's rules are IPv4, and router solicitations would only add noise.
        settings = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", *extra]
        run(in_ns(ns, ["sysctl", "-q", "-w", *settings]))

    def _attach(self, ep: Endpoint) -> None:
        run(["ip", "netns", "add", ep.ns])
        self._sysctls(ep.ns, [])
        wire(NET_NS, BRIDGE, ep.ifname, ep.ns, ep.inner, ep.mac, f"{ep.address}/{self.prefixlen}")

    def apply_firewall(self) -> None:
        run(in_ns(NET_NS, ["nft", "-f", "-"]), input=neutron.ruleset(self.stack, self.wirings))

    def cut(self, node: str, cut: bool = True) -> None:
        """Drop every frame to and from a node's port (its link stays up, as a VM's NIC would)."""
        run(in_ns(NET_NS, neutron.cut_command(self.nodes[node].ifname, cut)))

    def gateway_down(self, down: bool = True) -> None:
        """Take the gateway off the network (or bring it back) as a failed router would be."""
        if self.gateway is None:
            raise RuntimeError("the nodes' keepalived.conf names no gateway: the lab has none to take down")
        run(in_ns(NET_NS, neutron.cut_command(self.gateway.ifname, down)))

    def addresses(self, node: str) -> list[str]:
        ep = self.nodes[node]
        out = run(["ip", "-n", ep.ns, "-4", "-o", "addr", "show", "dev", ep.inner]).stdout
        return re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)

    def reset_addresses(self, node: str) -> None:
        """The node's interface as at boot: its own address only (a VIP held in memory is gone)."""
        ep = self.nodes[node]
        run(["ip", "-n", ep.ns, "addr", "flush", "dev", ep.inner])
        run(["ip", "-n", ep.ns, "addr", "add", f"{ep.address}/{self.prefixlen}", "dev", ep.inner])
        self.route_default(node)

    def route_default(self, node: str) -> None:
        """The node's default route via the subnet's gateway, as Neutron's DHCP gives it (none without a gateway)."""
        if self.gateway is not None:
            run(["ip", "-n", self.nodes[node].ns, "route", "replace", "default", "via", self.gateway.address])

    def holders(self) -> list[str]:
        """The nodes whose interface carries the VIP right now."""
        return [name for name in self.nodes if self.stack.vip in self.addresses(name)]

    def down(self) -> None:
        for ep in self._endpoints():
            remove_ns(ep.ns)
        remove_ns(NET_NS)


def remove_ns(ns: str) -> None:
    """Kill whatever still runs in a namespace, then delete it (its veths go with it)."""
    for _ in range(20):
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    run(["ip", "netns", "del", ns], check=False)


def lab_namespaces(prefix: str = PREFIX) -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def cleanup(prefix: str = PREFIX, workdir_prefix: str = WORKDIR_PREFIX) -> list[str]:
    """Remove everything a lab run may have left: kha-* namespaces with their processes (every
    process of a node, its engine and containers included, runs in the node's namespace), links
    and nft tables; mounts under the work directories (a node's own mounts die with its
    processes); the nodes' container cgroups; and kha-lab-* work directories. Returns what it removed."""
    removed = []
    for ns in lab_namespaces(prefix):
        remove_ns(ns)
        removed.append(f"netns {ns}")
    for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        target = mount.split()[1]
        if target.startswith(str(WORKDIR_PARENT / workdir_prefix)):
            run(["umount", "--lazy", target], check=False)
            removed.append(f"mount {target}")
    for d in CGROUP_ROOT.glob(f"*/{prefix}*"):
        remove_cgroups(d.name)
        removed.append(f"cgroup {d}")
    for d in WORKDIR_PARENT.glob(workdir_prefix + "*"):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"dir {d}")
    return removed
