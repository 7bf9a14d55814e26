"""Day 2 by Terraform's own plan: after a real deploy of the example on the loopback cloud, change one
thing at a time (in the config, or in the cloud) and read `terraform show -json` of the plan:
exactly which resources are created, updated in place, replaced or deleted, or that Terraform
refuses the plan and names the protected resource. These are the rows of docs/operate.md's day-2 table.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import config_from, synth
from tests.deploy.test_cloud_deploy import terraform, workdir_for, write_config

pytestmark = pytest.mark.cloud

TRACKERS = {f"terraform_data.userdata_demo-cp-{i}": ["update"] for i in (1, 2, 3)}


@pytest.fixture(scope="module")
def deployed(cloud, tmp_path_factory):
    work = workdir_for(synth(config_from()), tmp_path_factory.mktemp("day2"))
    terraform(work, "apply", "-auto-approve", "-input=false")
    yield work
    # The shared cloud must be left as found: lift prevent_destroy for the teardown only.
    write_config(synth(config_from({"allow_destroy": True})), work)
    terraform(work, "destroy", "-auto-approve", "-input=false")


def plan(work, changes: dict | None = None) -> dict | str:
    """The plan's non-trivial resource changes {address: actions}, or Terraform's refusal text."""
    write_config(synth(config_from(changes or {})), work)
    proc = terraform(work, "plan", "-input=false", "-out=plan.bin", check=False)
    if proc.returncode != 0:
        return proc.stderr
    shown = json.loads(terraform(work, "show", "-json", "plan.bin").stdout)
    return {
        rc["address"]: rc["change"]["actions"]
        for rc in shown.get("resource_changes", [])
        if rc["change"]["actions"] != ["no-op"]
    }


def refused(result, address: str) -> None:
    assert isinstance(result, str), f"expected Terraform to refuse, it planned {result}"
    assert "prevent_destroy" in result and address in result, result


def test_nothing_changed_plans_nothing(deployed):
    assert plan(deployed) == {}


def test_a_haproxy_port_rolls_the_trackers_and_replaces_its_member_rule(deployed):
    got = plan(deployed, {"ports.apiserver": 6444})
    assert got == {
        **TRACKERS,
        "openstack_networking_secgroup_rule_v2.rule_apiserver_from_members": ["delete", "create"],
    }


def test_a_client_cidr_added_creates_exactly_its_rule(deployed):
    got = plan(deployed, {"access.client_cidrs": ["192.0.2.0/24", "203.0.113.0/24"]})
    assert got == {"openstack_networking_secgroup_rule_v2.rule_frontend_from_203_0_113_0-24": ["create"]}


def test_a_client_cidr_swapped_deletes_and_creates_exactly_those_rules(deployed):
    got = plan(deployed, {"access.client_cidrs": ["203.0.113.0/24"]})
    assert got == {
        "openstack_networking_secgroup_rule_v2.rule_frontend_from_192_0_2_0-24": ["delete"],
        "openstack_networking_secgroup_rule_v2.rule_frontend_from_203_0_113_0-24": ["create"],
    }


def test_one_members_address_updates_its_port_in_place_and_every_tracker(deployed):
    got = plan(deployed, {"nodes.members.1.address": "192.0.2.22"})
    assert got == {**TRACKERS, "openstack_networking_port_v2.port_demo-cp-2": ["update"]}


def test_a_new_key_pair_name_touches_no_running_node(deployed):
    assert plan(deployed, {"nodes.key_pair": "other-key"}) == {}


def test_switching_anti_affinity_is_refused_naming_the_server_group(deployed):
    refused(plan(deployed, {"nodes.anti_affinity": "soft"}), "openstack_compute_servergroup_v2.server_group")


def test_switching_anti_affinity_with_allow_destroy_replaces_the_server_group_and_every_vm(deployed):
    """docs/operate.md's row, by Terraform's own plan: the group's policies are ForceNew and each
    instance's scheduler hint (ForceNew) names the new group, so every VM goes at once."""
    planned = plan(deployed, {"nodes.anti_affinity": "soft", "allow_destroy": True})
    assert isinstance(planned, dict), planned
    replaced = {a for a, actions in planned.items() if actions == ["delete", "create"]}
    assert replaced == {
        "openstack_compute_servergroup_v2.server_group",
        *(f"openstack_compute_instance_v2.instance_demo-cp-{i}" for i in (1, 2, 3)),
    }, planned


def test_renaming_the_cluster_on_the_same_state_is_refused(deployed):
    # every name changes; Terraform names the first protected resource it would destroy
    refused(plan(deployed, {"name": "prod"}), "openstack_compute_servergroup_v2.server_group")


def test_three_to_five_nodes_is_refused_by_the_roster(deployed):
    members = [{"name": f"demo-cp-{i}", "address": f"192.0.2.{10 + i}"} for i in range(1, 6)]
    refused(plan(deployed, {"nodes.count": 5, "nodes.members": members}), "terraform_data.roster")


def test_the_image_renamed_then_deleted_in_the_cloud_touches_no_running_node(cloud, deployed):  # noqa: F811
    cloud.sdk("conn.image.update_image(conn.image.find_image('ubuntu-24.04'), name='ubuntu-24.04-old')", admin=True)
    assert plan(deployed) == {}
    cloud.sdk("conn.image.delete_image(conn.image.find_image('ubuntu-24.04-old'))", admin=True)
    assert plan(deployed) == {}


def test_the_flavor_deleted_in_the_cloud_touches_no_running_node(cloud, deployed):  # noqa: F811
    cloud.sdk("conn.compute.delete_flavor(conn.compute.find_flavor('m1.large'))", admin=True)
    assert plan(deployed) == {}
