"""One stack per cluster: the OpenStack provider, the HA control plane, and what kubeadm needs from it."""

from __future__ import annotations

from cdktf import LocalBackend, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_openstack.provider import OpenstackProvider
from constructs import Construct

from cluster.config import ClusterConfig
from stacks.ha_control_plane import HaControlPlane
from cluster.plan import make_plan


class ClusterStack(TerraformStack):
    def __init__(self, scope: Construct, id_: str, *, config: ClusterConfig) -> None:
        super().__init__(scope, id_)
        # No credentials here: the provider reads OS_CLOUD / clouds.yaml like every OpenStack tool.
        OpenstackProvider(self, "openstack")
        # State holds the userdata and every address: keep it out of git, and see the README for
        # an encrypted remote backend. The relative path keeps the synthesized JSON portable.
        LocalBackend(self, path=f"../../../terraform.{id_}.tfstate")
        plan = make_plan(config)
        self.control_plane = HaControlPlane(self, "control-plane", config=config, plan=plan)
        cp = self.control_plane

        TerraformOutput(self, "vip", value=plan.vip, description="The control-plane VIP")
        TerraformOutput(
            self,
            "control_plane_endpoint",
            value=plan.control_plane_endpoint,
            description="Give to kubeadm init --control-plane-endpoint",
        )
        TerraformOutput(
            self, "node_addresses", value=dict(cp.addresses), description="Control-plane node addresses by name"
        )
        sans = [plan.vip]
        if cp.floating_ip is not None:
            sans.append(cp.floating_ip.address)
            TerraformOutput(self, "floating_ip", value=cp.floating_ip.address, description="Floating IP bound to the VIP port")
        TerraformOutput(
            self,
            "certificate_sans",
            value=sans,
            description="Give to kubeadm init --apiserver-cert-extra-sans (comma-separated)",
        )
