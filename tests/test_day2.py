"""Day 2 on the synthesized JSON: what a config change can and cannot do to the running control plane."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest
from cdktf_cdktf_provider_openstack.compute_instance_v2 import ComputeInstanceV2
from cdktf_cdktf_provider_openstack.compute_servergroup_v2 import ComputeServergroupV2
from cdktf_cdktf_provider_openstack.networking_floatingip_associate_v2 import NetworkingFloatingipAssociateV2
from cdktf_cdktf_provider_openstack.networking_floatingip_v2 import NetworkingFloatingipV2
from cdktf_cdktf_provider_openstack.networking_port_v2 import NetworkingPortV2
from cdktf_cdktf_provider_openstack.networking_secgroup_rule_v2 import NetworkingSecgroupRuleV2
from cdktf_cdktf_provider_openstack.networking_secgroup_v2 import NetworkingSecgroupV2

from tests.conftest import DELETE, config_from, example_data, resources, synth
from tfcheck.engine import engine
from userdata.cloudconfig import unescape as node_text
from userdata.stack import with_port_addresses

TRACKER = "terraform_data"
# What holds etcd and the endpoint: no plan may destroy or replace them unless the config allows it.
PROTECTED = (ComputeInstanceV2, NetworkingPortV2, ComputeServergroupV2, NetworkingFloatingipV2)
WITH_FIP = {"vip.floating_ip_pool": "public"}
NO_MEMBERS = {"nodes.members": DELETE}


@pytest.fixture(scope="module")
def with_fip():
    return synth(config_from(WITH_FIP))


@pytest.fixture(scope="module")
def no_members():
    return synth(config_from(NO_MEMBERS))


# --- 1. prevent_destroy -----------------------------------------------------------------------


def _protected(doc):
    return {
        f"{cls.TF_RESOURCE_TYPE}.{name}": body.get("lifecycle", {}).get("prevent_destroy")
        for cls in PROTECTED
        for name, body in resources(doc, cls).items()
    }


def require_terraform() -> None:
    """These tests run Terraform (or OpenTofu: ENGINE=tofu) itself (no provider, no cloud): skip, saying
    so, where it is absent."""
    if shutil.which(engine()) is None:
        pytest.skip(f"{engine()} not on PATH: `make setup` installs the project's (.tools/bin/{engine()})")


def test_every_node_port_vip_port_server_group_and_floating_ip_refuses_destruction(with_fip):
    protected = _protected(with_fip)
    assert len(protected) == 3 + 4 + 1 + 1
    assert set(protected.values()) == {True}, protected


def test_allow_destroy_lifts_the_protection_everywhere_for_a_teardown():
    doc = synth(config_from({**WITH_FIP, "allow_destroy": True}))
    assert set(_protected(doc).values()) == {False}


def test_allow_destroy_changes_nothing_but_the_protection(with_fip):
    doc = synth(config_from({**WITH_FIP, "allow_destroy": True}))
    for cls in PROTECTED:
        for name, body in resources(doc, cls).items():
            before = dict(resources(with_fip, cls)[name])
            lifecycle = {**before["lifecycle"], "prevent_destroy": False}
            assert body == {**before, "lifecycle": lifecycle}


def test_the_roster_is_protected_and_lists_the_nodes_and_the_floating_ip(with_fip, example_json):
    roster = with_fip["resource"][TRACKER]["roster"]
    nodes = ["demo-cp-1", "demo-cp-2", "demo-cp-3"]
    assert roster == {"triggers_replace": {"nodes": nodes, "floating_ip": True}, "lifecycle": {"prevent_destroy": True}}
    assert example_json["resource"][TRACKER]["roster"]["triggers_replace"] == {"nodes": nodes, "floating_ip": False}


def _roster_doc(changes):
    return {"resource": {TRACKER: {"roster": synth(config_from(changes))["resource"][TRACKER]["roster"]}}}


# The one wording the two engines do not share: how each names a prevent_destroy refusal (OpenTofu
# also suggests -exclude where Terraform suggests -target). Both name prevent_destroy and the address.
REFUSAL = {
    "terraform": "Resource terraform_data.roster has lifecycle.prevent_destroy set",
    "tofu": "Resource instance terraform_data.roster has prevent_destroy set",
}

FIVE = {
    "nodes.count": 5,
    "nodes.members": [{"name": f"demo-cp-{i}", "address": f"192.0.2.{10 + i}"} for i in range(1, 6)],
}
TWO_RENAMED = {"nodes.members.2.name": "demo-cp-9"}


@pytest.mark.parametrize(
    "changes",
    [FIVE, TWO_RENAMED, {"nodes.members": DELETE, "nodes.count": 5}, WITH_FIP],
    ids=["more-nodes", "renamed-member", "count", "floating-ip"],
)
def test_terraform_refuses_a_plan_that_changes_the_set_of_nodes_or_the_floating_ip_unless_allowed(tmp_path, changes):
    """Run by Terraform itself: the roster is built in (terraform_data), no cloud needed."""
    require_terraform()
    _terraform(tmp_path, _roster_doc({}), "apply", "-auto-approve")
    refused = _terraform(tmp_path, _roster_doc(changes), "plan", check=False)
    assert refused.returncode == 1
    assert REFUSAL[engine()] in " ".join(refused.stderr.split())
    allowed = _terraform(tmp_path, _roster_doc({**changes, "allow_destroy": True}), "plan")
    assert "Plan: 1 to add, 0 to change, 1 to destroy." in allowed.stdout


def test_the_same_nodes_in_another_order_plan_no_change(tmp_path):
    """Negative control: the roster plans nothing while the set of names stays (and an unrelated change)."""
    require_terraform()
    _terraform(tmp_path, _roster_doc({}), "apply", "-auto-approve")
    reordered = {"nodes.members": list(reversed(example_data()["nodes"]["members"])), "ports.apiserver": 6444}
    assert "No changes." in _terraform(tmp_path, _roster_doc(reordered), "plan").stdout


def test_what_can_be_recreated_without_loss_is_not_protected(with_fip):
    for cls in (NetworkingSecgroupV2, NetworkingSecgroupRuleV2, NetworkingFloatingipAssociateV2):
        for body in resources(with_fip, cls).values():
            assert "prevent_destroy" not in body.get("lifecycle", {})


# --- 2. image, flavor, key pair ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "attribute"),
    [("nodes.image", "image_name"), ("nodes.flavor", "flavor_name"), ("nodes.key_pair", "key_pair")],
)
def test_a_new_image_flavor_or_key_changes_only_that_ignored_attribute(example_json, field, attribute):
    doc = synth(config_from({field: "new-value"}))
    before, after = resources(example_json, ComputeInstanceV2), resources(doc, ComputeInstanceV2)
    for name, vm in before.items():
        differing = {k for k in vm.keys() | after[name].keys() if vm.get(k) != after[name].get(k)}
        assert differing == {attribute}
        assert attribute in vm["lifecycle"]["ignore_changes"]
    assert doc["resource"][TRACKER] == example_json["resource"][TRACKER]


def test_outputs_show_what_each_node_runs_and_which_nodes_differ_from_the_config(example_json):
    running = example_json["locals"]["node_cloud_settings"]
    assert running["demo-cp-2"] == {
        "image_name": "${openstack_compute_instance_v2.instance_demo-cp-2.image_name}",
        "flavor_name": "${openstack_compute_instance_v2.instance_demo-cp-2.flavor_name}",
        "key_pair": "${openstack_compute_instance_v2.instance_demo-cp-2.key_pair}",
    }
    outputs = example_json["output"]
    assert outputs["node_cloud_settings"]["value"] == "${local.node_cloud_settings}"
    assert outputs["nodes_behind_config"]["value"] == (
        "${[for name, vm in local.node_cloud_settings : name if vm != "
        '{image_name = "ubuntu-24.04", flavor_name = "m1.large", key_pair = "demo-admin"}]}'
    )


def test_terraform_evaluates_nodes_behind_config_to_the_nodes_on_other_values(example_json, tmp_path):
    """The output's expression, run by Terraform itself on stand-in values for the instances."""
    require_terraform()
    running = {
        "demo-cp-1": {"image_name": "ubuntu-24.04", "flavor_name": "m1.large", "key_pair": "demo-admin"},
        "demo-cp-2": {"image_name": "ubuntu-22.04", "flavor_name": "m1.large", "key_pair": "demo-admin"},
        "demo-cp-3": {"image_name": "ubuntu-24.04", "flavor_name": "m1.large", "key_pair": "old-key"},
    }
    doc = {
        "locals": {"node_cloud_settings": running},
        "output": {"behind": example_json["output"]["nodes_behind_config"]},
    }
    assert _terraform_outputs(tmp_path, doc)["behind"] == ["demo-cp-2", "demo-cp-3"]


def _terraform(folder, doc, *args, check=True):
    """Terraform on `doc` in `folder` (its local state kept between calls); no provider, no network."""
    (folder / "main.tf.json").write_text(json.dumps(doc))
    env = {
        "TF_CLI_CONFIG_FILE": "/dev/null",
        "CHECKPOINT_DISABLE": "1",
        "PATH": os.environ["PATH"],
        "HOME": str(folder),
    }
    flags = ["-no-color"] if args[0] == "output" else ["-no-color", "-input=false"]
    done = subprocess.run([engine(), *args, *flags], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 or not check, done.stderr
    return done


def _terraform_outputs(folder, doc):
    _terraform(folder, doc, "apply", "-auto-approve")
    done = _terraform(folder, doc, "output", "-json")
    return {k: v["value"] for k, v in json.loads(done.stdout).items()}


# --- 3. security-group rules ------------------------------------------------------------------

MEMBER_RULES = {
    "rule_vrrp_from_members",
    "rule_ping_from_members",
    "rule_frontend_from_members",
    "rule_apiserver_from_members",
    "rule_etcd_from_members",
}


def _rules(doc):
    return {name: json.dumps(body, sort_keys=True) for name, body in resources(doc, NetworkingSecgroupRuleV2).items()}


@pytest.mark.parametrize(
    ("changes", "created", "deleted"),
    [
        ({"access.client_cidrs": ["192.0.2.0/24", "10.20.0.0/16"]}, {"rule_frontend_from_10_20_0_0-16"}, set()),
        ({"access.client_cidrs": ["10.20.0.0/16", "192.0.2.0/24"]}, {"rule_frontend_from_10_20_0_0-16"}, set()),
        (
            {"access.client_cidrs": ["10.20.0.0/16"]},
            {"rule_frontend_from_10_20_0_0-16"},
            {"rule_frontend_from_192_0_2_0-24"},
        ),
        ({"access.admin_cidrs": ["203.0.113.7/32", "198.51.100.0/24"]}, {"rule_ssh_from_203_0_113_7-32"}, set()),
        ({"access.admin_cidrs": []}, set(), {"rule_ssh_from_198_51_100_0-24"}),
        ({"access.monitoring_cidrs": ["203.0.113.0/24"]}, {"rule_metrics_from_203_0_113_0-24"}, set()),
    ],
    ids=["add-client", "add-client-first", "swap-client", "add-admin-first", "remove-admin", "add-monitoring"],
)
def test_a_cidr_added_or_removed_creates_or_deletes_exactly_its_rules(example_json, changes, created, deleted):
    before, after = _rules(example_json), _rules(synth(config_from(changes)))
    assert set(after) - set(before) == created
    assert set(before) - set(after) == deleted
    # Every rule both have is byte-identical: no replacement (a rule has no in-place update).
    assert {n: after[n] for n in before.keys() & after.keys()} == {n: before[n] for n in before.keys() & after.keys()}
    assert MEMBER_RULES <= before.keys() & after.keys()


def test_removing_a_monitoring_cidr_deletes_only_its_rule():
    two = _rules(synth(config_from({"access.monitoring_cidrs": ["203.0.113.0/24", "198.51.100.7/32"]})))
    one = _rules(synth(config_from({"access.monitoring_cidrs": ["198.51.100.7/32"]})))
    assert set(two) - set(one) == {"rule_metrics_from_203_0_113_0-24"} and not set(one) - set(two)
    assert all(one[n] == two[n] for n in one)


def test_the_rule_diff_sees_an_attribute_change(example_json):
    """Negative control: a rule whose meaning changes (its port) is seen as changed."""
    before, after = _rules(example_json), _rules(synth(config_from({"ports.apiserver": 6444})))
    assert before["rule_apiserver_from_members"] != after["rule_apiserver_from_members"]
    assert before["rule_vrrp_from_members"] == after["rule_vrrp_from_members"]


# --- 4. userdata trackers ---------------------------------------------------------------------


def _trackers(doc):
    return {
        name: body["input"]["user_data_sha256"]
        for name, body in doc["resource"][TRACKER].items()
        if name.startswith("userdata_")
    }


def _user_data(doc):
    return {name: vm["user_data"] for name, vm in resources(doc, ComputeInstanceV2).items()}


@pytest.fixture(params=["members", "no-members"])
def base(request, example_json, no_members):
    return (example_json, {}) if request.param == "members" else (no_members, NO_MEMBERS)


def test_the_tracker_hashes_the_very_expression_that_becomes_user_data(example_json, no_members):
    for doc in (example_json, no_members):
        trackers = _trackers(doc)
        for name, text in _user_data(doc).items():
            assert (
                trackers[name.replace("instance_", "userdata_")]
                == "${sha256(" + json.dumps(text, ensure_ascii=False) + ")}"
            )


PORT_REF = re.compile(r"openstack_networking_port_v2\.port_(demo-cp-\d)\.all_fixed_ips")


@pytest.mark.parametrize("which", ["members", "no-members"])
def test_terraform_computes_the_trackers_hash_of_the_user_data_the_node_receives(
    example_json, no_members, tmp_path, which
):
    """Terraform evaluates both: the hash equals sha256 of user_data as Terraform renders it.

    Without members the port references become locals holding stand-in addresses (no provider here).
    """
    require_terraform()
    doc = example_json if which == "members" else no_members
    vm = resources(doc, ComputeInstanceV2)["instance_demo-cp-1"]
    tracker = doc["resource"][TRACKER]["userdata_demo-cp-1"]["input"]["user_data_sha256"]
    local = {f"port_{n}": [f"10.0.0.{i}"] for i, n in enumerate(("demo-cp-1", "demo-cp-2", "demo-cp-3"), 11)}
    outputs = _terraform_outputs(
        tmp_path,
        {
            "locals": local,
            "output": {
                "user_data": {"value": PORT_REF.sub(r"local.port_\1", vm["user_data"])},
                "hash": {"value": PORT_REF.sub(r"local.port_\1", tracker)},
            },
        },
    )
    expected = (
        node_text(vm["user_data"])
        if which == "members"
        else node_text(with_port_addresses(vm["user_data"], {k: v[0] for k, v in local.items()}))
    )
    assert outputs["user_data"] == expected
    assert outputs["hash"] == hashlib.sha256(expected.encode()).hexdigest()


def test_adding_a_client_cidr_changes_no_tracker(base):
    doc, changes = base
    other = synth(config_from({**changes, "access.client_cidrs": ["192.0.2.0/24", "10.20.0.0/16"]}))
    assert _trackers(other) == _trackers(doc)
    assert _user_data(other) == _user_data(doc)


def test_a_haproxy_setting_changes_every_nodes_tracker(base):
    doc, changes = base
    other = _trackers(synth(config_from({**changes, "ports.apiserver": 6444})))
    before = _trackers(doc)
    assert set(other) == set(before) and all(other[n] != before[n] for n in before)


def test_one_members_new_address_changes_that_nodes_and_its_peers_user_data(example_json):
    doc = synth(config_from({"nodes.members.1.address": "192.0.2.22"}))
    before, after = _user_data(example_json), _user_data(doc)
    for name in before:  # every node: its own (demo-cp-2) or its peers' keepalived and haproxy lists
        assert after[name] != before[name] and "192.0.2.22" in after[name]
    assert all(_trackers(doc)[n] != _trackers(example_json)[n] for n in _trackers(doc))


def test_the_tracker_follows_a_neutron_address_by_reference(no_members):
    trackers = _trackers(no_members)
    for node in ("demo-cp-1", "demo-cp-2", "demo-cp-3"):
        for peer in ("demo-cp-1", "demo-cp-2", "demo-cp-3"):
            assert (
                f"${{element(openstack_networking_port_v2.port_{peer}.all_fixed_ips, 0)}}"
                in trackers[f"userdata_{node}"]
            )


# --- 5. the VIP port before any node port -----------------------------------------------------


def test_without_members_every_node_port_waits_for_the_vip_port(no_members):
    ports = resources(no_members, NetworkingPortV2)
    for name, port in ports.items():
        if name != "vip_port":
            assert port["depends_on"] == ["openstack_networking_port_v2.vip_port"]
    assert "depends_on" not in ports["vip_port"]


def test_with_fixed_addresses_node_ports_need_not_wait(example_json):
    assert not [p for p in resources(example_json, NetworkingPortV2).values() if "depends_on" in p]


# --- 6. required_version ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, ">= 1.4"),
        ({"backend": "s3", "bucket": "kha-state", "region": "eu-west-1"}, ">= 1.11"),
        ({"backend": "s3", "bucket": "kha-state", "region": "eu-west-1", "use_lockfile": False}, ">= 1.11"),
    ],
    ids=["local", "s3-lockfile", "s3-no-lockfile"],
)
def test_required_version_is_the_lowest_every_feature_needs(state, expected):
    doc = synth(config_from({"state": state} if state else {}))
    assert doc["terraform"]["required_version"] == expected


def test_terraform_older_than_the_required_version_is_refused(tmp_path, example_json):
    """The constraint is Terraform's to enforce: checked with the installed Terraform against a higher one.

    OpenTofu (1.12 and later) reads `required_version` only from its own `.tofu.json` files and takes
    the one in a `.tf.json` for Terraform's: it plans where Terraform refuses (docs/toolchain.md).
    """
    require_terraform()
    too_new = {"terraform": {"required_version": ">= 99.0"}, "output": {"x": {"value": 1}}}
    done = _terraform(tmp_path, too_new, "plan", check=False)
    if engine() == "tofu":
        assert done.returncode == 0, done.stderr
        (tmp_path / "versions.tofu.json").write_text(json.dumps({"terraform": {"required_version": ">= 99.0"}}))
        done = _terraform(tmp_path, too_new, "plan", check=False)
        (tmp_path / "versions.tofu.json").unlink()
        assert done.returncode != 0 and "This module is not compatible with OpenTofu v" in done.stderr
    else:
        assert done.returncode != 0 and "Unsupported Terraform Core version" in done.stderr
    ok = {
        "terraform": {"required_version": example_json["terraform"]["required_version"]},
        "output": {"x": {"value": 1}},
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(ok))
    assert _terraform_outputs(tmp_path, ok) == {"x": 1}
