"""The HA control-plane construct: maps a Plan onto Neutron ports, security group, server group and VMs.

It makes no decisions of its own (those live in `cluster.plan`). Terraform addresses are derived
from node names, never from list positions, so adding or reordering nodes recreates nothing.
"""

from __future__ import annotations

import json
from typing import Any

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

from cluster.plan import NodePlan, Plan, SecurityRule
from userdata.render import render_cloud_config

# What the cloud or the operator may change under a running control-plane node without Terraform
# touching it: the plan's image, flavor and key pair apply to nodes created later.
CLOUD_SETTINGS = ("image_name", "flavor_name", "key_pair")
IGNORED_ON_INSTANCES = ["user_data", *CLOUD_SETTINGS]


class HaControlPlane(Construct):
    """Three (or five, seven) control-plane VMs sharing one VIP moved by keepalived."""

    def __init__(self, scope: Construct, id_: str, *, plan: Plan) -> None:
        super().__init__(scope, id_)
        self.plan = plan
        self.network, self.subnet, subnet_matches = self._network()
        self.security_group = self._security_group()
        self.vip_port = self._vip_port(subnet_matches)
        self.server_group = self._server_group()
        self.ports = {node.name: self._node_port(node, subnet_matches) for node in plan.nodes}
        self.addresses = {
            node.name: node.address or Token.as_string(Fn.element(self.ports[node.name].all_fixed_ips, 0))
            for node in plan.nodes
        }
        self.floating_ip = self._floating_ip()
        self.instances: dict[str, ComputeInstanceV2] = {}
        previous: ComputeInstanceV2 | None = None
        for node in plan.nodes:
            previous = self.instances[node.name] = self._instance(node, previous)
        self._roster()

    def _lifecycle(self, **more: Any) -> TerraformResourceLifecycle:
        # What holds etcd and the endpoint is kept unless the plan says otherwise: Terraform then
        # refuses a plan that destroys or replaces it by itself, and names the resource.
        return TerraformResourceLifecycle(prevent_destroy=self.plan.protected, **more)

    def _network(self) -> tuple[DataOpenstackNetworkingNetworkV2, DataOpenstackNetworkingSubnetV2, Precondition]:
        plan = self.plan
        network = DataOpenstackNetworkingNetworkV2(self, "network", name=plan.network.name, network_id=plan.network.id)
        network.override_logical_id("network")
        subnet = DataOpenstackNetworkingSubnetV2(
            self, "subnet", name=plan.subnet.name, subnet_id=plan.subnet.id, network_id=network.id
        )
        subnet.override_logical_id("subnet")
        # The config's CIDR drives every address check; refuse to plan against a different subnet.
        subnet_matches = Precondition(
            condition=Op.eq(subnet.cidr, plan.subnet_cidr),
            error_message=f"subnet {plan.subnet.label} is not {plan.subnet_cidr} as network.subnet.cidr says",
        )
        return network, subnet, subnet_matches

    def _security_group(self) -> NetworkingSecgroupV2:
        plan = self.plan
        group = NetworkingSecgroupV2(
            self,
            "security-group",
            name=f"{plan.cluster}-control-plane",
            description=f"HA control plane of {plan.cluster}: VRRP, API endpoint, apiservers, etcd, SSH",
        )
        group.override_logical_id("control_plane")
        for rule in plan.security_rules:
            self._rule(group, rule)
        return group

    def _rule(self, group: NetworkingSecgroupV2, rule: SecurityRule) -> None:
        r = NetworkingSecgroupRuleV2(
            self,
            f"rule-{rule.name}",
            security_group_id=group.id,
            direction="ingress",
            ethertype="IPv4",
            protocol=rule.protocol,
            port_range_min=rule.ports[0] if rule.ports else None,
            port_range_max=rule.ports[1] if rule.ports else None,
            remote_ip_prefix=rule.remote_prefix,
            remote_group_id=group.id if rule.remote_prefix is None else None,
            description=rule.reason,
        )
        r.override_logical_id(f"rule_{rule.name}")

    def _vip_port(self, subnet_matches: Precondition) -> NetworkingPortV2:
        plan = self.plan
        port = NetworkingPortV2(
            self,
            "vip-port",
            name=f"{plan.cluster}-vip",
            description=f"Reserves the control-plane VIP of {plan.cluster}; no VM is bound to it",
            network_id=self.network.id,
            admin_state_up=True,
            fixed_ip=[NetworkingPortV2FixedIp(subnet_id=self.subnet.id, ip_address=plan.vip)],
            security_group_ids=[self.security_group.id],
            lifecycle=self._lifecycle(precondition=[subnet_matches]),
        )
        port.override_logical_id("vip_port")
        return port

    def _server_group(self) -> ComputeServergroupV2:
        # Its name and policies are ForceNew, and each instance's scheduler hint names it: a
        # replaced group would replace every VM at once.
        group = ComputeServergroupV2(
            self,
            "server-group",
            name=f"{self.plan.cluster}-control-plane",
            policies=[self.plan.server_group_policy],
            lifecycle=self._lifecycle(),
        )
        group.override_logical_id("server_group")
        return group

    def _node_port(self, node: NodePlan, subnet_matches: Precondition) -> NetworkingPortV2:
        port = NetworkingPortV2(
            self,
            f"port-{node.name}",
            name=f"{node.name}-port",
            network_id=self.network.id,
            admin_state_up=True,
            port_security_enabled=True,
            fixed_ip=[NetworkingPortV2FixedIp(subnet_id=self.subnet.id, ip_address=node.address)],
            security_group_ids=[self.security_group.id, *self.plan.extra_security_groups],
            # The exact VIP (/32): a wider prefix does not make OVN treat the VIP as virtual.
            allowed_address_pairs=[NetworkingPortV2AllowedAddressPairs(ip_address=self.plan.vip)],
            lifecycle=self._lifecycle(precondition=[subnet_matches]),
            # Created in parallel, Neutron could hand a node the VIP's address before the VIP
            # port reserves it, and the VIP port would then fail: reserve the VIP first.
            depends_on=[self.vip_port] if node.address is None else None,
        )
        port.override_logical_id(f"port_{node.name}")
        return port

    def _floating_ip(self) -> NetworkingFloatingipV2 | None:
        if self.plan.floating_ip_pool is None:
            return None
        # On the VIP port, never on a VM: it follows the VIP wherever keepalived moves it.
        # Its address is in the apiservers' certificates (each node's kubeadm.yaml): keep it too.
        fip = NetworkingFloatingipV2(
            self,
            "floating-ip",
            pool=self.plan.floating_ip_pool,
            description=f"{self.plan.cluster} control-plane endpoint",
            lifecycle=self._lifecycle(),
        )
        fip.override_logical_id("vip_floating_ip")
        assoc = NetworkingFloatingipAssociateV2(
            self, "floating-ip-association", floating_ip=fip.address, port_id=self.vip_port.id
        )
        assoc.override_logical_id("vip_floating_ip_association")
        return fip

    def _instance(self, node: NodePlan, previous: ComputeInstanceV2 | None) -> ComputeInstanceV2:
        plan = self.plan
        fip = Token.as_string(self.floating_ip.address) if self.floating_ip is not None else None
        user_data = render_cloud_config(plan, node.name, self.addresses, fip)
        instance = ComputeInstanceV2(
            self,
            f"instance-{node.name}",
            name=node.name,
            image_name=plan.image,
            flavor_name=plan.flavor,
            key_pair=plan.key_pair,
            user_data=user_data,
            network=[ComputeInstanceV2Network(port=self.ports[node.name].id)],
            scheduler_hints=[ComputeInstanceV2SchedulerHints(group=self.server_group.id)],
            metadata={"cluster": plan.cluster, "role": "control-plane"},
            # Day 2: a new haproxy/keepalived config must not replace control-plane VMs. The
            # change shows up on the userdata tracker below; nodes are rolled one by one. A new
            # image, flavor or key pair would rebuild, resize or replace every node at once
            # (and the provider re-reads image and flavor from the cloud): they apply to nodes
            # created later, and one node at a time with `terraform apply -replace` (docs/operate.md).
            lifecycle=self._lifecycle(ignore_changes=IGNORED_ON_INSTANCES),
            depends_on=[previous] if previous is not None and plan.instances_in_turn else None,
        )
        instance.override_logical_id(f"instance_{node.name}")
        # Terraform hashes the very expression that becomes user_data, Neutron's addresses
        # included: the tracker changes exactly when this node's rendered userdata does.
        tracker = TerraformResource(self, f"userdata-{node.name}", terraform_resource_type="terraform_data")
        tracker.add_override("input", {"node": node.name, "user_data_sha256": _terraform_sha256(user_data)})
        tracker.override_logical_id(f"userdata_{node.name}")
        return instance

    def _roster(self) -> None:
        # prevent_destroy guards only resources still in the config: a node whose name leaves the
        # config (a lower nodes.count, a renamed member), or the floating IP when floating_ip_pool
        # goes, would be destroyed without a word. The roster is replaced whenever the set of node
        # names or the floating IP's presence changes, and it is protected like them, so Terraform
        # refuses that plan too, unless allow_destroy says it is meant.
        roster = TerraformResource(self, "roster", terraform_resource_type="terraform_data")
        roster.add_override(
            "triggers_replace",
            {"nodes": sorted(n.name for n in self.plan.nodes), "floating_ip": self.plan.floating_ip_pool is not None},
        )
        roster.add_override("lifecycle", {"prevent_destroy": self.plan.protected})
        roster.override_logical_id("roster")


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
