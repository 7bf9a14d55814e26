"""One stack per cluster: the OpenStack provider, the HA control plane, and what kubeadm needs from it."""

from __future__ import annotations

import json

from cdktf import LocalBackend, S3Backend, S3BackendEndpointConfig, TerraformLocal, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_openstack.provider import OpenstackProvider
from constructs import Construct

from cluster.plan import Plan, StatePlan
from stacks.ha_control_plane import CLOUD_SETTINGS, HaControlPlane

# The lowest Terraform each feature of the JSON needs: lifecycle preconditions came with 1.2 and
# terraform_data with 1.4. The S3 backend's use_lockfile (written either way) came with 1.10 as an
# experiment and is generally available since 1.11: S3 state asks for 1.11, the version checked here.
REQUIRED_VERSION = {"local": ">= 1.4", "s3": ">= 1.11"}
# What the same JSON needs from OpenTofu: terraform_data came with 1.6 (its first release), the S3
# use_lockfile with 1.10. Said here and in docs/toolchain.md, not in the JSON: OpenTofu 1.12 reads
# no required_version from a .tf.json file (only from its own .tofu.json files, or from a `language`
# block that Terraform refuses), so no one constraint in cdk.tf.json can hold both engines.
REQUIRED_OPENTOFU_VERSION = {"local": ">= 1.6", "s3": ">= 1.10"}


# The provider version Terraform installs, pinned here and nowhere else (the Makefile reads this
# line to build the same version into the project's mirror). The bindings were generated for
# 3.0.0, but the Go module proxy the project's machines reach serves only 3.4.0: `make validate`
# and tests/test_terraform.py hold every attribute the bindings set against 3.4.0's own schema.
OPENSTACK_PROVIDER_VERSION = "3.4.0"
# Fully qualified: a bare `terraform-provider-openstack/openstack` means registry.terraform.io to
# Terraform but registry.opentofu.org to OpenTofu, whose `init` would then look for it under that
# hostname and miss the project's mirror (opentofu/opentofu#2402). Spelt out, both engines install
# the same provider from the same mirror, and the state names it as Terraform always did.
OPENSTACK_PROVIDER_SOURCE = "registry.terraform.io/terraform-provider-openstack/openstack"


class ClusterStack(TerraformStack):
    def __init__(self, scope: Construct, id_: str, *, plan: Plan) -> None:
        super().__init__(scope, id_)
        # No credentials here: the provider reads OS_CLOUD / clouds.yaml like every OpenStack tool.
        OpenstackProvider(self, "openstack")
        self.add_override("terraform.required_providers.openstack.version", OPENSTACK_PROVIDER_VERSION)
        self.add_override("terraform.required_providers.openstack.source", OPENSTACK_PROVIDER_SOURCE)
        # State holds the userdata and every address: the config says where it lives (docs/remote-state.md).
        if plan.state.backend == "s3":
            self._s3_backend(plan.state)
        else:
            # The relative path keeps the synthesized JSON portable.
            LocalBackend(self, path=f"../../../terraform.{id_}.tfstate")
        self.add_override("terraform.required_version", REQUIRED_VERSION[plan.state.backend])
        self.control_plane = HaControlPlane(self, "control-plane", plan=plan)
        cp = self.control_plane

        TerraformOutput(self, "vip", value=plan.vip, description="The control-plane VIP")
        TerraformOutput(
            self,
            "control_plane_endpoint",
            value=plan.control_plane_endpoint,
            description="kubeadm's controlPlaneEndpoint (each node's kubeadm.yaml carries it)",
        )
        TerraformOutput(
            self, "node_addresses", value=dict(cp.addresses), description="Control-plane node addresses by name"
        )
        # Image, flavor and key pair apply to nodes created later (the instances ignore changes to
        # them): what each node runs, as the last refresh read it, and the nodes that differ from
        # the config, i.e. still to be moved one at a time (docs/operate.md, "Day 2").
        running = TerraformLocal(
            self,
            "node-cloud-settings",
            {name: {attr: getattr(vm, attr) for attr in CLOUD_SETTINGS} for name, vm in cp.instances.items()},
        )
        running.override_logical_id("node_cloud_settings")
        configured = {"image_name": plan.image, "flavor_name": plan.flavor, "key_pair": plan.key_pair}
        TerraformOutput(
            self,
            "node_cloud_settings",
            value=running.expression,
            description="Image, flavor and key pair each node runs",
        )
        TerraformOutput(
            self,
            "nodes_behind_config",
            value=f"${{[for name, vm in local.{running.friendly_unique_id} : "
            f"name if vm != {_hcl_object(configured)}]}}",
            description="Nodes whose image, flavor or key pair differs from the config: replace them one at a time",
        )
        sans = [plan.vip]
        if cp.floating_ip is not None:
            sans.append(cp.floating_ip.address)
            TerraformOutput(
                self, "floating_ip", value=cp.floating_ip.address, description="Floating IP bound to the VIP port"
            )
        TerraformOutput(
            self,
            "certificate_sans",
            value=sans,
            description="Addresses clients reach the apiservers by (each node's kubeadm.yaml lists them in certSANs)",
        )

    def _s3_backend(self, state: StatePlan) -> None:
        """No credentials here either: Terraform reads them from the environment at `init`."""
        assert state.bucket is not None and state.region is not None  # the config check guarantees both
        # Skip the calls a store other than AWS cannot answer exactly when an endpoint is given.
        other_store = True if state.other_store else None
        S3Backend(
            self,
            bucket=state.bucket,
            key=state.key,
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


def _hcl_object(values: dict[str, str]) -> str:
    """A literal HCL object of strings (json.dumps quotes them as HCL does; the config refuses `${` and `%{`)."""
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "}"
