"""The HA control-plane construct: maps a Plan onto Neutron ports, security group, server group and VMs.

It makes no decisions of its own (those live in `cluster.plan`). Terraform addresses are derived
from node names, never from list positions, so adding or reordering nodes recreates nothing.
"""

from __future__ import annotations

import json

from cdktf import Fn, Op, Precondition, TerraformResource, TerraformResourceLifecycle, Token
from cdktf_cdktf_provider_openstack.compute_instance_v2 import (
    ComputeInstanceV2,
    ComputeInstanceV2Network,
    ComputeInstanceV2SchedulerHints,
)
from cdktf_cdktf_provider_openstack.compute_servergroup_v2 import ComputeServergroupV2
from cdktf_cdktf_provider_openstack.data_openstack_networking_network_v2 import DataOpenstackNetworkingNetworkV2
from cdktf_cdktf_provider_openstack.data_openstack_networking_subnet_v2 import DataOpenstackNetworkingSubnetV2
from cdktf_cdktf_provider_openstack.networking_floatingip_associate_v2 import NetworkingFloatingipAssociateV2
from cdktf_cdktf_provider_openstack.networking_floatingip_v2 import NetworkingFloatingipV2
from cdktf_cdktf_provider_openstack.networking_port_v2 import (
    NetworkingPortV2,
    NetworkingPortV2AllowedAddressPairs,
    NetworkingPortV2FixedIp,
)
from cdktf_cdktf_provider_openstack.networking_secgroup_rule_v2 import NetworkingSecgroupRuleV2
from cdktf_cdktf_provider_openstack.networking_secgroup_v2 import NetworkingSecgroupV2
from constructs import Construct

from cluster.config import ClusterConfig
from cluster.plan import Plan
from userdata.render import render_cloud_config

VRRP_PROTOCOL = "112"
ICMP_ECHO_REQUEST = (8, 0)  # for ICMP, Neutron's port range is (type, code)
ETCD_PORTS = (2379, 2380)
SSH_PORT = 22
# What the cloud or the operator may change under a running control-plane node without Terraform
# touching it; each maps to the config field whose new value applies to nodes created later.
CLOUD_SETTINGS = {"image_name": "nodes.image", "flavor_name": "nodes.flavor", "key_pair": "nodes.key_pair"}
IGNORED_ON_INSTANCES = ["user_data", *CLOUD_SETTINGS]


def _cidr_id(cidr: object) -> str:
    return str(cidr).replace(".", "_").replace("/", "-")


class HaControlPlane(Construct):
    """Three (or five, seven) control-plane VMs sharing one VIP moved by keepalived."""

    def __init__(self, scope: Construct, id_: str, *, config: ClusterConfig, plan: Plan) -> None:
        super().__init__(scope, id_)
        self.plan = plan
        net = config.network

        self.network = DataOpenstackNetworkingNetworkV2(self, "network", name=net.name, network_id=net.id)
        self.network.override_logical_id("network")
        self.subnet = DataOpenstackNetworkingSubnetV2(
            self, "subnet", name=net.subnet.name, subnet_id=net.subnet.id, network_id=self.network.id
        )
        self.subnet.override_logical_id("subnet")
        # The config's CIDR drives every address check; refuse to plan against a different subnet.
        subnet_matches = Precondition(
            condition=Op.eq(self.subnet.cidr, str(net.subnet.cidr)),
            error_message=f"subnet {net.subnet.name or net.subnet.id} is not {net.subnet.cidr} "
            "as network.subnet.cidr says",
        )

        self.security_group = self._security_group(config)
        # No plan may destroy or replace what holds etcd and the endpoint unless the config says
        # so (allow_destroy: a planned teardown or a node replacement). Terraform then refuses such
        # a plan by itself and names the resource; the roster below covers nodes (and the floating
        # IP) that leave the config, which prevent_destroy cannot (docs/operate.md, "Day 2").
        keep = not config.allow_destroy

        self.vip_port = NetworkingPortV2(
            self,
            "vip-port",
            name=f"{plan.cluster}-vip",
            description=f"Reserves the control-plane VIP of {plan.cluster}; no VM is bound to it",
            network_id=self.network.id,
            admin_state_up=True,
            fixed_ip=[NetworkingPortV2FixedIp(subnet_id=self.subnet.id, ip_address=plan.vip)],
            security_group_ids=[self.security_group.id],
            lifecycle=TerraformResourceLifecycle(precondition=[subnet_matches], prevent_destroy=keep),
        )
        self.vip_port.override_logical_id("vip_port")

        policy = "anti-affinity" if config.nodes.anti_affinity == "hard" else "soft-anti-affinity"
        # Its name and policies are ForceNew, and each instance's scheduler hint names it: a
        # replaced group would replace every VM at once.
        self.server_group = ComputeServergroupV2(
            self,
            "server-group",
            name=f"{plan.cluster}-control-plane",
            policies=[policy],
            lifecycle=TerraformResourceLifecycle(prevent_destroy=keep),
        )
        self.server_group.override_logical_id("server_group")

        self.ports: dict[str, NetworkingPortV2] = {}
        for node in plan.nodes:
            port = NetworkingPortV2(
                self,
                f"port-{node.name}",
                name=f"{node.name}-port",
                network_id=self.network.id,
                admin_state_up=True,
                port_security_enabled=True,
                fixed_ip=[NetworkingPortV2FixedIp(subnet_id=self.subnet.id, ip_address=node.address)],
                security_group_ids=[self.security_group.id, *config.nodes.extra_security_groups],
                # The exact VIP (/32): a wider prefix does not make OVN treat the VIP as virtual.
                allowed_address_pairs=[NetworkingPortV2AllowedAddressPairs(ip_address=plan.vip)],
                lifecycle=TerraformResourceLifecycle(precondition=[subnet_matches], prevent_destroy=keep),
                # Created in parallel, Neutron could hand a node the VIP's address before the VIP
                # port reserves it, and the VIP port would then fail: reserve the VIP first.
                depends_on=[self.vip_port] if node.address is None else None,
            )
            port.override_logical_id(f"port_{node.name}")
            self.ports[node.name] = port

        self.addresses = {
            node.name: node.address or Token.as_string(Fn.element(self.ports[node.name].all_fixed_ips, 0))
            for node in plan.nodes
        }

        self.floating_ip: NetworkingFloatingipV2 | None = None
        if config.vip.floating_ip_pool:
            # On the VIP port, never on a VM: it follows the VIP wherever keepalived moves it.
            # Its address is in the apiservers' certificates (each node's kubeadm.yaml): keep it too.
            self.floating_ip = NetworkingFloatingipV2(
                self,
                "floating-ip",
                pool=config.vip.floating_ip_pool,
                description=f"{plan.cluster} control-plane endpoint",
                lifecycle=TerraformResourceLifecycle(prevent_destroy=keep),
            )
            self.floating_ip.override_logical_id("vip_floating_ip")
            assoc = NetworkingFloatingipAssociateV2(
                self, "floating-ip-association", floating_ip=self.floating_ip.address, port_id=self.vip_port.id
            )
            assoc.override_logical_id("vip_floating_ip_association")

        self.instances: dict[str, ComputeInstanceV2] = {}
        previous: ComputeInstanceV2 | None = None
        for node in plan.nodes:
            fip = Token.as_string(self.floating_ip.address) if self.floating_ip is not None else None
            user_data = render_cloud_config(plan, node.name, self.addresses, fip)
            instance = ComputeInstanceV2(
                self,
                f"instance-{node.name}",
                name=node.name,
                image_name=config.nodes.image,
                flavor_name=config.nodes.flavor,
                key_pair=config.nodes.key_pair,
                user_data=user_data,
                network=[ComputeInstanceV2Network(port=self.ports[node.name].id)],
                scheduler_hints=[ComputeInstanceV2SchedulerHints(group=self.server_group.id)],
                metadata={"cluster": plan.cluster, "role": "control-plane"},
                # Day 2: a new haproxy/keepalived config must not replace control-plane VMs. The
                # change shows up on the userdata tracker below; nodes are rolled one by one. A new
                # image, flavor or key pair would rebuild, resize or replace every node at once
                # (and the provider re-reads image and flavor from the cloud): they apply to nodes
                # created later, and one node at a time with `terraform apply -replace` (docs/operate.md).
                lifecycle=TerraformResourceLifecycle(ignore_changes=IGNORED_ON_INSTANCES, prevent_destroy=keep),
                # Soft anti-affinity is ignored for VMs created in parallel: create them in turn.
                depends_on=[previous] if previous is not None and policy == "soft-anti-affinity" else None,
            )
            instance.override_logical_id(f"instance_{node.name}")
            self.instances[node.name] = instance
            previous = instance
            # Terraform hashes the very expression that becomes user_data, Neutron's addresses
            # included: the tracker changes exactly when this node's rendered userdata does.
            tracker = TerraformResource(self, f"userdata-{node.name}", terraform_resource_type="terraform_data")
            tracker.add_override("input", {"node": node.name, "user_data_sha256": _terraform_sha256(user_data)})
            tracker.override_logical_id(f"userdata_{node.name}")

        # prevent_destroy guards only resources still in the config: a node whose name leaves the
        # config (a lower nodes.count, a renamed member), or the floating IP when floating_ip_pool
        # goes, would be destroyed without a word. The roster is replaced whenever the set of node
        # names or the floating IP's presence changes, and it is protected like them, so Terraform
        # refuses that plan too, unless allow_destroy says it is meant.
        roster = TerraformResource(self, "roster", terraform_resource_type="terraform_data")
        roster.add_override(
            "triggers_replace",
            {"nodes": sorted(n.name for n in plan.nodes), "floating_ip": config.vip.floating_ip_pool is not None},
        )
        roster.add_override("lifecycle", {"prevent_destroy": keep})
        roster.override_logical_id("roster")

    def _security_group(self, config: ClusterConfig) -> NetworkingSecgroupV2:
        plan = self.plan
        group = NetworkingSecgroupV2(
            self,
            "security-group",
            name=f"{plan.cluster}-control-plane",
            description=f"HA control plane of {plan.cluster}: VRRP, API endpoint, apiservers, etcd, SSH",
        )
        group.override_logical_id("control_plane")

        def rule(
            name: str, description: str, protocol: str, ports: tuple[int, int] | None = None, *, cidr=None
        ) -> None:
            r = NetworkingSecgroupRuleV2(
                self,
                f"rule-{name}",
                security_group_id=group.id,
                direction="ingress",
                ethertype="IPv4",
                protocol=protocol,
                port_range_min=ports[0] if ports else None,
                port_range_max=ports[1] if ports else None,
                remote_ip_prefix=str(cidr) if cidr is not None else None,
                remote_group_id=group.id if cidr is None else None,
                description=description,
            )
            r.override_logical_id(f"rule_{name}")

        rule("vrrp_from_members", "VRRP adverts between keepalived peers", VRRP_PROTOCOL)
        rule(
            "ping_from_members",
            "keepalived's network check: a node no peer answers may be cut off",
            "icmp",
            ICMP_ECHO_REQUEST,
        )
        rule("frontend_from_members", "haproxy endpoint from the control-plane nodes", "tcp", (plan.frontend_port,) * 2)
        rule("apiserver_from_members", "kube-apiserver behind haproxy", "tcp", (plan.apiserver_port,) * 2)
        rule("etcd_from_members", "stacked etcd peers and clients", "tcp", ETCD_PORTS)
        for cidr in config.access.client_cidrs:
            rule(
                f"frontend_from_{_cidr_id(cidr)}",
                "API endpoint for clients",
                "tcp",
                (plan.frontend_port,) * 2,
                cidr=cidr,
            )
        for cidr in config.access.admin_cidrs:
            rule(f"ssh_from_{_cidr_id(cidr)}", "SSH for administrators", "tcp", (SSH_PORT, SSH_PORT), cidr=cidr)
        for cidr in config.access.monitoring_cidrs:
            rule(
                f"metrics_from_{_cidr_id(cidr)}",
                "Prometheus metrics for monitoring",
                "tcp",
                (plan.metrics_port,) * 2,
                cidr=cidr,
            )
        return group


def _terraform_sha256(text: str) -> str:
    """`${sha256("<text>")}`: Terraform hashes the text as it evaluates it, references included.

    cdktf's Fn.sha256 refuses a string with double quotes in it, and Fn.rawString would escape the
    references away. A JSON string literal is an HCL one here: the escapes json.dumps writes for
    this text (\\ \" \n \t \r) mean the same in HCL, and `$${` / `%%{` stay template escapes, as in
    user_data. Token placeholders pass through unchanged and become `${...}` interpolations.
    """
    if any(ord(c) < 0x20 and c not in "\n\t\r" for c in text):
        raise ValueError("userdata holds a control character HCL cannot escape as JSON does")
    return "${sha256(" + json.dumps(text, ensure_ascii=False) + ")}"
