"""Terraform itself, with the real OpenStack provider, on every variant of the synthesized JSON.

`make setup` builds the provider into the project's mirror and installs the pinned Terraform;
these tests init each stack from that mirror (no backend, no cloud), run `terraform validate`,
and hold every attribute the JSON sets against the provider's schema.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from cdktf_cdktf_provider_openstack.networking_port_v2 import NetworkingPortV2
from cdktf_cdktf_provider_openstack.networking_secgroup_rule_v2 import NetworkingSecgroupRuleV2

from cluster.config import load_config
from stacks.cluster_stack import OPENSTACK_PROVIDER_VERSION
from tests.conftest import DELETE, EXAMPLE, ROOT, config_from, synth
from tfcheck.schema import check_schema
from tfcheck.terraform import MIRROR, Workdir, missing_setup, version

pytestmark = pytest.mark.skipif(missing_setup() is not None, reason=str(missing_setup()))

PROVIDER = "registry.terraform.io/terraform-provider-openstack/openstack"


def _members(count: int) -> list[dict[str, str]]:
    return [{"name": f"demo-cp-{i}", "address": f"192.0.2.{10 + i}"} for i in range(1, count + 1)]


# Each variant: a config the project ships, or the example with the changes that reach a
# different part of the JSON.
VARIANTS: dict[str, Any] = {
    "example.yaml": EXAMPLE,
    "team-s3.example.yaml": ROOT / "config" / "team-s3.example.yaml",
    "3 nodes without members": {"nodes.members": DELETE},
    "5 nodes with members": {"nodes.count": 5, "nodes.members": _members(5)},
    "5 nodes without members": {"nodes.count": 5, "nodes.members": DELETE},
    "7 nodes with members": {"nodes.count": 7, "nodes.members": _members(7)},
    "7 nodes without members": {"nodes.count": 7, "nodes.members": DELETE},
    "soft anti-affinity": {"nodes.anti_affinity": "soft"},
    "floating IP": {"vip.floating_ip_pool": "public"},
    "monitoring CIDRs": {"access.monitoring_cidrs": ["203.0.113.0/24", "198.51.100.7/32"]},
    "everything optional at once": {
        "nodes.count": 5,
        "nodes.members": DELETE,
        "nodes.anti_affinity": "soft",
        "nodes.extra_security_groups": ["default"],
        "vip.floating_ip_pool": "public",
        "access.monitoring_cidrs": ["203.0.113.0/24"],
    },
}


def _doc(variant: Any) -> dict[str, Any]:
    config = load_config(variant) if isinstance(variant, Path) else config_from(variant)
    return synth(config)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> dict[str, Workdir]:
    """Every variant synthesized and initialised once; the tests below read them."""
    out = {}
    for label, variant in VARIANTS.items():
        work = Workdir(tmp_path_factory.mktemp("tf") / "stack", _doc(variant))
        work.init()
        out[label] = work
    return out


def test_the_pinned_terraform_runs():
    assert re.fullmatch(r"\d+\.\d+\.\d+", version()["terraform_version"])


def test_terraform_runs_the_one_provider_version_the_stack_pins_built_into_the_mirror(workdirs):
    work = workdirs["example.yaml"]
    assert work.doc["terraform"]["required_providers"]["openstack"]["version"] == OPENSTACK_PROVIDER_VERSION
    assert work.provider_versions() == {PROVIDER: OPENSTACK_PROVIDER_VERSION}
    assert (
        MIRROR / "registry.terraform.io/terraform-provider-openstack/openstack" / OPENSTACK_PROVIDER_VERSION
    ).is_dir()


@pytest.mark.parametrize("label", list(VARIANTS))
def test_terraform_validate_finds_no_error_and_no_warning(workdirs, label):
    result = workdirs[label].validate()
    assert result.valid, [str(d) for d in result.errors]
    assert result.errors == () and result.warnings == ()


@pytest.mark.parametrize("label", list(VARIANTS))
def test_every_attribute_the_json_sets_is_in_the_provider_schema(workdirs, label):
    work = workdirs[label]
    check = check_schema(work.doc, work.provider_schemas())
    assert check.problems == []
    # Nothing passes by being skipped: every resource and data source was walked.
    assert check.resources == sum(
        len(items) for kind in ("resource", "data") for items in work.doc.get(kind, {}).values()
    )
    assert check.checked > 5 * check.resources


# Negative controls: what a broken JSON gets from Terraform and the provider.


def _broken(workdirs, tmp_path, edit) -> Workdir:
    doc = copy.deepcopy(workdirs["example.yaml"].doc)
    edit(doc)
    work = Workdir(tmp_path / "stack", doc)
    work.init()
    return work


def test_a_misspelt_vrrp_protocol_fails_with_the_providers_message(workdirs, tmp_path):
    def edit(doc):
        doc["resource"][NetworkingSecgroupRuleV2.TF_RESOURCE_TYPE]["rule_vrrp_from_members"]["protocol"] = "vrrrp"

    result = _broken(workdirs, tmp_path, edit).validate()
    assert not result.valid
    [error] = result.errors
    assert error.address == f"{NetworkingSecgroupRuleV2.TF_RESOURCE_TYPE}.rule_vrrp_from_members"
    # The provider's own ValidateFunc: a protocol is a name it knows or a number 0-255.
    assert error.summary == (
        'unknown "vrrrp" protocol for openstack_networking_secgroup_rule_v2: '
        'strconv.Atoi: parsing "vrrrp": invalid syntax'
    )


def test_an_attribute_the_provider_lacks_fails_validate_and_the_schema_check(workdirs, tmp_path):
    def edit(doc):
        doc["resource"][NetworkingPortV2.TF_RESOURCE_TYPE]["vip_port"]["colour"] = "blue"

    work = _broken(workdirs, tmp_path, edit)
    result = work.validate()
    assert not result.valid
    [error] = result.errors
    # Terraform's JSON syntax names it so (HCL would say "Unsupported argument").
    assert (error.summary, error.detail) == (
        "Extraneous JSON object property",
        'No argument or block type is named "colour".',
    )
    check = check_schema(work.doc, work.provider_schemas())
    assert [p.split(":")[0] for p in check.problems] == [f"{NetworkingPortV2.TF_RESOURCE_TYPE}.vip_port.colour"]
