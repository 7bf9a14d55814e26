"""Terraform itself (or OpenTofu: ENGINE=tofu), with the real OpenStack provider, on every variant of
the synthesized JSON.

`make setup` builds the provider into the project's mirror and installs the pinned Terraform;
these tests init each stack from that mirror (no backend, no cloud), run `terraform validate`,
and hold every attribute the JSON sets against the provider's schema.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import pytest
from cdktf_cdktf_provider_openstack.networking_port_v2 import NetworkingPortV2
from cdktf_cdktf_provider_openstack.networking_secgroup_rule_v2 import NetworkingSecgroupRuleV2

from stacks.cluster_stack import OPENSTACK_PROVIDER_SOURCE, OPENSTACK_PROVIDER_VERSION
from tests.conftest import ROOT, synth
from tests.variants import VARIANTS, variant_config
from tfcheck.engine import engine
from tfcheck.schema import check_schema
from tfcheck.terraform import MIRROR, TerraformError, Workdir, missing_setup, version

pytestmark = pytest.mark.skipif(missing_setup() is not None, reason=str(missing_setup()))

PROVIDER = "registry.terraform.io/terraform-provider-openstack/openstack"
BARE_SOURCE = "terraform-provider-openstack/openstack"


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> dict[str, Workdir]:
    """Every variant synthesized and initialised once; the tests below read them."""
    out = {}
    for label, variant in VARIANTS.items():
        work = Workdir(tmp_path_factory.mktemp("tf") / "stack", synth(variant_config(variant)))
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


def test_the_provider_source_is_fully_qualified_as_both_engines_and_the_mirror_name_it(workdirs):
    assert OPENSTACK_PROVIDER_SOURCE == PROVIDER
    assert workdirs["example.yaml"].doc["terraform"]["required_providers"]["openstack"]["source"] == PROVIDER
    assert f'include = ["{PROVIDER}"]' in (ROOT / "Makefile").read_text()


def _tree(folder: Path) -> dict[str, str]:
    """Every file and link under `folder`: a link's target, a file's digest."""
    return {
        str(p.relative_to(folder)): str(p.readlink()) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_a_second_init_changes_nothing(workdirs):
    work = workdirs["example.yaml"]
    before = _tree(work.path)
    assert ".terraform.lock.hcl" in before and any(k.startswith(".terraform/providers/") for k in before)
    work.init()
    assert _tree(work.path) == before


def test_the_bare_provider_source_is_what_opentofu_does_not_find_in_the_mirror(workdirs, tmp_path):
    """Negative control for the fully qualified source: unqualified, Terraform still finds the mirror
    (its default registry is registry.terraform.io), OpenTofu looks under registry.opentofu.org and fails."""
    doc = copy.deepcopy(workdirs["example.yaml"].doc)
    doc["terraform"]["required_providers"]["openstack"]["source"] = BARE_SOURCE
    work = Workdir(tmp_path / "stack", doc)
    if engine() == "tofu":
        with pytest.raises(TerraformError, match=f"registry.opentofu.org/{BARE_SOURCE}"):
            work.init()
    else:
        work.init()
        assert work.provider_versions() == {PROVIDER: OPENSTACK_PROVIDER_VERSION}


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
