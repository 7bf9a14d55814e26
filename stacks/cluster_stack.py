"""One stack per cluster: the OpenStack provider, the HA control plane, and what kubeadm needs from it."""

from __future__ import annotations

from cdktf import LocalBackend, S3Backend, S3BackendEndpointConfig, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_openstack.provider import OpenstackProvider
from constructs import Construct

from cluster.config import ClusterConfig
from stacks.ha_control_plane import HaControlPlane
from cluster.plan import make_plan


# The provider version Terraform installs, pinned here and nowhere else (the Makefile reads this
# line to build the same version into the project's mirror). The bindings were generated for
# 3.0.0, but the Go module proxy the project's machines reach serves only 3.4.0: `make validate`
# and tests/test_terraform.py hold every attribute the bindings set against 3.4.0's own schema.
OPENSTACK_PROVIDER_VERSION = "3.4.0"


class ClusterStack(TerraformStack):
    def __init__(self, scope: Construct, id_: str, *, config: ClusterConfig) -> None:
        super().__init__(scope, id_)
        # No credentials here: the provider reads OS_CLOUD / clouds.yaml like every OpenStack tool.
        OpenstackProvider(self, "openstack")
        self.add_override("terraform.required_providers.openstack.version", OPENSTACK_PROVIDER_VERSION)
        # State holds the userdata and every address: the config says where it lives (README, "Team use").
        if config.state.backend == "s3":
            self._s3_backend(config)
        else:
            # The relative path keeps the synthesized JSON portable.
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

    def _s3_backend(self, config: ClusterConfig) -> None:
        """No credentials here either: Terraform reads them from the environment at `init`."""
        state = config.state
        assert state.bucket is not None and state.region is not None  # the config check guarantees both
        # A store other than AWS has no STS, IAM or EC2 metadata to validate against, and some such
        # stores reject the AWS SDK's newer checksums: skip those calls exactly when an endpoint is given.
        other_store = True if state.endpoint else None
        S3Backend(
            self,
            bucket=state.bucket,
            key=config.state_key,
            region=state.region,
            encrypt=state.encrypt,
            use_path_style=state.use_path_style or None,
            endpoints=S3BackendEndpointConfig(s3=state.endpoint) if state.endpoint else None,
            skip_credentials_validation=other_store,
            skip_region_validation=other_store,
            skip_requesting_account_id=other_store,
            skip_metadata_api_check=other_store,
            skip_s3_checksum=other_store,
        )
        # cdktf 0.20.12's S3Backend predates Terraform 1.10's S3 lock file.
        self.add_override("terraform.backend.s3.use_lockfile", state.use_lockfile)
