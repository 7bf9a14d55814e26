"""Synthesized Terraform JSON: the resources the HA design needs, exactly, and nothing wider."""

from __future__ import annotations

import ast
import copy
import json
import os
from pathlib import Path

import pytest
from cdktf_cdktf_provider_openstack.compute_instance_v2 import ComputeInstanceV2
from cdktf_cdktf_provider_openstack.compute_servergroup_v2 import ComputeServergroupV2
from cdktf_cdktf_provider_openstack.networking_floatingip_associate_v2 import NetworkingFloatingipAssociateV2
from cdktf_cdktf_provider_openstack.networking_floatingip_v2 import NetworkingFloatingipV2
from cdktf_cdktf_provider_openstack.networking_port_v2 import NetworkingPortV2
from cdktf_cdktf_provider_openstack.networking_secgroup_rule_v2 import NetworkingSecgroupRuleV2

from cluster.config import load_config
from cluster.plan import make_plan
from tests.conftest import DELETE, ROOT, config_from, resources, synth
from userdata import stack

SG_REF = "${openstack_networking_secgroup_v2.control_plane.id}"
NODES = {"demo-cp-1": "192.0.2.11", "demo-cp-2": "192.0.2.12", "demo-cp-3": "192.0.2.13"}
SNAPSHOT = Path(__file__).parent / "snapshots" / "demo.cdk.tf.json"


def rule_set(doc):
    """Each ingress rule as (protocol, port range, source), the source a CIDR or 'members'."""
    out = set()
    for rule in resources(doc, NetworkingSecgroupRuleV2).values():
        assert rule["security_group_id"] == SG_REF
        assert rule["direction"] == "ingress" and rule["ethertype"] == "IPv4"
        source = "members" if rule.get("remote_group_id") == SG_REF else rule["remote_ip_prefix"]
        ports = (rule.get("port_range_min"), rule.get("port_range_max"))
        out.add((rule["protocol"], ports, source))
    return out


def test_security_group_admits_exactly_what_the_design_needs(example_json):
    assert rule_set(example_json) == {
        ("112", (None, None), "members"),
        ("icmp", (8, 0), "members"),
        ("tcp", (9443, 9443), "members"),
        ("tcp", (9443, 9443), "192.0.2.0/24"),
        ("tcp", (6443, 6443), "members"),
        ("tcp", (2379, 2380), "members"),
        ("tcp", (22, 22), "198.51.100.0/24"),
    }


def test_vrrp_is_admitted_from_the_group_itself_not_from_an_address_range(example_json):
    vrrp = [r for r in resources(example_json, NetworkingSecgroupRuleV2).values() if r["protocol"] == "112"]
    assert len(vrrp) == 1
    assert vrrp[0]["remote_group_id"] == SG_REF and "remote_ip_prefix" not in vrrp[0]
    assert "port_range_min" not in vrrp[0]


def test_no_rule_is_open_to_the_internet_by_default(example_json):
    assert not [
        r
        for r in resources(example_json, NetworkingSecgroupRuleV2).values()
        if r.get("remote_ip_prefix") == "0.0.0.0/0"
    ]


def test_every_rule_without_a_cidr_is_limited_to_members(example_json):
    for rule in resources(example_json, NetworkingSecgroupRuleV2).values():
        assert ("remote_ip_prefix" in rule) != ("remote_group_id" in rule)


def test_world_open_ssh_only_with_the_explicit_opt_in():
    doc = synth(config_from({"access.admin_cidrs": ["0.0.0.0/0"], "access.allow_ssh_from_anywhere": True}))
    assert ("tcp", (22, 22), "0.0.0.0/0") in rule_set(doc)


def test_no_admin_cidrs_means_no_ssh_rule():
    doc = synth(config_from({"access.admin_cidrs": []}))
    assert not [r for r in rule_set(doc) if r[1] == (22, 22)]


def test_no_monitoring_cidrs_means_the_metrics_port_is_closed(example_json):
    assert not [r for r in rule_set(example_json) if r[1] == (8405, 8405)]


def test_metrics_port_is_open_to_each_monitoring_cidr_and_nothing_else():
    doc = synth(config_from({"access.monitoring_cidrs": ["203.0.113.0/24", "198.51.100.7/32"], "ports.metrics": 9100}))
    metrics = {r for r in rule_set(doc) if r[1] == (9100, 9100)}
    assert metrics == {("tcp", (9100, 9100), "203.0.113.0/24"), ("tcp", (9100, 9100), "198.51.100.7/32")}
    rules = resources(doc, NetworkingSecgroupRuleV2)
    assert {"rule_metrics_from_203_0_113_0-24", "rule_metrics_from_198_51_100_7-32"} <= set(rules)


def test_vip_is_reserved_by_its_own_port_that_no_vm_uses(example_json):
    ports = resources(example_json, NetworkingPortV2)
    vip = ports["vip_port"]
    assert [f["ip_address"] for f in vip["fixed_ip"]] == ["192.0.2.10"]
    used = {n["port"] for i in resources(example_json, ComputeInstanceV2).values() for n in i["network"]}
    assert "${openstack_networking_port_v2.vip_port.id}" not in used
    assert "device_id" not in vip


def test_each_node_port_has_its_fixed_address_and_the_security_group(example_json):
    ports = resources(example_json, NetworkingPortV2)
    for name, address in NODES.items():
        port = ports[f"port_{name}"]
        assert [f["ip_address"] for f in port["fixed_ip"]] == [address]
        assert port["fixed_ip"][0]["subnet_id"] == "${data.openstack_networking_subnet_v2.subnet.id}"
        assert port["security_group_ids"] == [SG_REF]
        assert port["port_security_enabled"] is True


def test_vip_is_the_exact_allowed_address_pair_on_every_node_port(example_json):
    ports = resources(example_json, NetworkingPortV2)
    for name in NODES:
        assert ports[f"port_{name}"]["allowed_address_pairs"] == [{"ip_address": "192.0.2.10"}]


def test_hard_anti_affinity_server_group_by_default(example_json):
    groups = resources(example_json, ComputeServergroupV2)
    assert list(groups) == ["server_group"]
    assert groups["server_group"]["policies"] == ["anti-affinity"]


def test_each_vm_is_attached_to_its_own_port_and_in_the_server_group(example_json):
    instances = resources(example_json, ComputeInstanceV2)
    assert set(instances) == {f"instance_{n}" for n in NODES}
    for name in NODES:
        vm = instances[f"instance_{name}"]
        assert vm["name"] == name
        assert vm["network"] == [{"port": f"${{openstack_networking_port_v2.port_{name}.id}}"}]
        assert vm["scheduler_hints"] == [{"group": "${openstack_compute_servergroup_v2.server_group.id}"}]
        assert "depends_on" not in vm


def test_soft_anti_affinity_creates_vms_one_after_another():
    doc = synth(config_from({"nodes.anti_affinity": "soft"}))
    assert resources(doc, ComputeServergroupV2)["server_group"]["policies"] == ["soft-anti-affinity"]
    instances = resources(doc, ComputeInstanceV2)
    assert "depends_on" not in instances["instance_demo-cp-1"]
    assert instances["instance_demo-cp-2"]["depends_on"] == ["openstack_compute_instance_v2.instance_demo-cp-1"]
    assert instances["instance_demo-cp-3"]["depends_on"] == ["openstack_compute_instance_v2.instance_demo-cp-2"]


def test_outputs_give_kubeadm_its_endpoint_and_sans(example_json):
    outputs = {k: v["value"] for k, v in example_json["output"].items()}
    assert outputs == {
        "vip": "192.0.2.10",
        "control_plane_endpoint": "192.0.2.10:9443",
        "node_addresses": NODES,
        "certificate_sans": ["192.0.2.10"],
        # Day 2: what each node runs, and which nodes still differ from the config (tests/test_day2.py).
        "node_cloud_settings": "${local.node_cloud_settings}",
        "nodes_behind_config": "${[for name, vm in local.node_cloud_settings : name if vm != "
        '{image_name = "ubuntu-24.04", flavor_name = "m1.large", key_pair = "demo-admin"}]}',
    }


def test_floating_ip_goes_on_the_vip_port_and_into_the_sans():
    doc = synth(config_from({"vip.floating_ip_pool": "public"}))
    fips = resources(doc, NetworkingFloatingipV2)
    assert fips["vip_floating_ip"]["pool"] == "public"
    assoc = resources(doc, NetworkingFloatingipAssociateV2)["vip_floating_ip_association"]
    assert assoc["port_id"] == "${openstack_networking_port_v2.vip_port.id}"
    outputs = {k: v["value"] for k, v in doc["output"].items()}
    assert outputs["floating_ip"] == "${openstack_networking_floatingip_v2.vip_floating_ip.address}"
    assert outputs["certificate_sans"] == [
        "192.0.2.10",
        "${openstack_networking_floatingip_v2.vip_floating_ip.address}",
    ]


def test_subnet_cidr_is_checked_against_the_real_subnet_at_plan_time(example_json):
    port = resources(example_json, NetworkingPortV2)["vip_port"]
    (pre,) = port["lifecycle"]["precondition"]
    assert pre["condition"] == '${(data.openstack_networking_subnet_v2.subnet.cidr == "192.0.2.0/24")}'


def test_provider_has_no_credentials_in_the_json(example_json):
    assert example_json["provider"] == {"openstack": [{}]}


def test_neutron_allocated_addresses_are_referenced_not_invented():
    doc = synth(config_from({"nodes.members": DELETE}))
    ports = resources(doc, NetworkingPortV2)
    assert set(ports) == {"vip_port", "port_demo-cp-1", "port_demo-cp-2", "port_demo-cp-3"}
    assert "ip_address" not in ports["port_demo-cp-1"]["fixed_ip"][0]
    user_data = resources(doc, ComputeInstanceV2)["instance_demo-cp-1"]["user_data"]
    assert "unicast_src_ip ${element(openstack_networking_port_v2.port_demo-cp-1.all_fixed_ips, 0)}" in user_data
    assert "${element(openstack_networking_port_v2.port_demo-cp-2.all_fixed_ips, 0)}" in user_data


def test_user_data_with_fixed_addresses_is_literal_text(example_json):
    for vm in resources(example_json, ComputeInstanceV2).values():
        assert "${" not in vm["user_data"] and "%{" not in vm["user_data"]


# --- Terraform state ---------------------------------------------------------------------------

SWIFT = {
    "backend": "s3",
    "bucket": "kha-state",
    "region": "RegionOne",
    "endpoint": "https://object.example.org",
    "use_path_style": True,
}


def test_state_is_a_local_file_outside_the_synthesized_tree_by_default(example_json):
    assert example_json["terraform"]["backend"] == {"local": {"path": "../../../terraform.demo.tfstate"}}


def test_state_on_an_s3_compatible_store_is_encrypted_locked_and_skips_aws_only_checks():
    doc = synth(config_from({"state": SWIFT}))
    assert doc["terraform"]["backend"] == {
        "s3": {
            "bucket": "kha-state",
            "key": "demo/terraform.tfstate",
            "region": "RegionOne",
            "endpoints": {"s3": "https://object.example.org"},
            "use_path_style": True,
            "encrypt": True,
            "use_lockfile": True,
            "skip_credentials_validation": True,
            "skip_region_validation": True,
            "skip_requesting_account_id": True,
            "skip_metadata_api_check": True,
            "skip_s3_checksum": True,
        }
    }


def test_state_on_aws_s3_keeps_the_aws_checks_and_may_turn_the_lock_file_off():
    doc = synth(
        config_from(
            {
                "state": {
                    "backend": "s3",
                    "bucket": "kha-state",
                    "region": "eu-west-1",
                    "key": "k8s/demo.tfstate",
                    "use_lockfile": False,
                }
            }
        )
    )
    assert doc["terraform"]["backend"] == {
        "s3": {
            "bucket": "kha-state",
            "key": "k8s/demo.tfstate",
            "region": "eu-west-1",
            "encrypt": True,
            "use_lockfile": False,
        }
    }


def test_s3_state_carries_no_credentials_and_the_resources_do_not_change(example_json):
    doc = synth(config_from({"state": SWIFT}))
    backend = json.dumps(doc["terraform"]["backend"])
    for argument in ("access_key", "secret_key", "token", "profile", 'endpoint"', "force_path_style", "dynamodb"):
        assert argument not in backend
    assert doc["resource"] == example_json["resource"]


def test_the_team_example_is_the_example_cluster_with_its_state_in_s3(example_json):
    doc = synth(load_config(ROOT / "config" / "team-s3.example.yaml"))
    assert doc["resource"] == example_json["resource"]
    assert doc["terraform"]["backend"]["s3"]["endpoints"] == {"s3": "https://object.example.org"}


# --- Day 2 -------------------------------------------------------------------------------------


def test_instances_ignore_user_data_image_flavor_and_key_pair_changes(example_json):
    for vm in resources(example_json, ComputeInstanceV2).values():
        assert vm["lifecycle"]["ignore_changes"] == ["user_data", "image_name", "flavor_name", "key_pair"]


def test_a_new_container_image_changes_user_data_trackers_not_instances(example_json):
    changed = synth(config_from({"containers.haproxy": "haproxy:2.8.17"}))
    before, after = resources(example_json, ComputeInstanceV2), resources(changed, ComputeInstanceV2)
    for name, vm in before.items():
        # Only user_data differs, and Terraform is told to ignore it: no replacement.
        differing = {k for k in vm.keys() | after[name].keys() if vm.get(k) != after[name].get(k)}
        assert differing == {"user_data"}
    trackers_before = example_json["resource"]["terraform_data"]
    trackers_after = changed["resource"]["terraform_data"]
    assert set(trackers_before) == {f"userdata_{n}" for n in NODES} | {"roster"}
    for name in trackers_before.keys() - {"roster"}:
        assert trackers_before[name]["input"] != trackers_after[name]["input"]
    assert trackers_before["roster"] == trackers_after["roster"]


def test_adding_nodes_renames_nothing(example_json):
    members = [{"name": f"demo-cp-{i}", "address": f"192.0.2.{10 + i}"} for i in range(1, 6)]
    bigger = synth(config_from({"nodes.count": 5, "nodes.members": members}))
    for rtype, items in example_json["resource"].items():
        assert set(items) <= set(bigger["resource"][rtype]), rtype


def _addresses(doc):
    return sorted(f"{rtype}.{name}" for rtype, items in doc["resource"].items() for name in items)


def test_snapshot_of_the_synthesized_example(example_json):
    """A rename that would recreate VMs, or any change to what is deployed, shows up here in review.

    Refresh after an intended change with: UPDATE_SNAPSHOTS=1 make test
    """
    text = json.dumps(example_json, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    expected = json.loads(SNAPSHOT.read_text())
    assert _addresses(example_json) == _addresses(expected), "resource addresses changed: VMs may be recreated"
    assert example_json == expected


# --- the rules are the plan's, one to one ----------------------------------------------------------
SG = "control_plane"  # the security group's Terraform name


def planned_rules(plan):
    """The plan's rules as the reader of the JSON names them."""
    return {
        (
            f"rule_{r.name}",
            stack.protocol(r.protocol),
            *(r.ports or (None, None)),
            r.remote_prefix,
            None if r.remote_prefix else SG,
            r.reason,
        )
        for r in plan.security_rules
    }


def synthesized_rules(doc):
    """Every ingress IPv4 rule of the nodes' group, read back through the stack reader."""
    out = set()
    for r in stack.SynthesizedStack(doc).rules:
        assert (r.secgroup, r.direction, r.ethertype) == (SG, "ingress", "IPv4"), r
        out.add((r.name, r.protocol, r.port_min, r.port_max, r.remote_prefix, r.remote_group, r.description))
    return out


MORE_CIDRS = {
    "access.client_cidrs": ["192.0.2.0/24", "10.20.0.0/16"],
    "access.monitoring_cidrs": ["203.0.113.0/24"],
    "ports.metrics": 9100,
}


@pytest.mark.parametrize("changes", [{}, MORE_CIDRS], ids=["example", "more-cidrs"])
def test_the_synthesized_rules_are_exactly_the_plans_rules(changes):
    cfg = config_from(changes)
    assert synthesized_rules(synth(cfg)) == planned_rules(make_plan(cfg))


def test_a_rule_that_differs_from_the_plans_is_caught(example_json, example_plan):
    """Negative control: one port, one source or one reason changed in the JSON, or a rule gone."""
    rules = resources(example_json, NetworkingSecgroupRuleV2)
    for name, key, value in (
        ("rule_etcd_from_members", "port_range_max", 2381),
        ("rule_apiserver_from_members", "description", "reworded"),
        ("rule_ssh_from_198_51_100_0-24", "remote_ip_prefix", "0.0.0.0/0"),
    ):
        doc = copy.deepcopy(example_json)
        resources(doc, NetworkingSecgroupRuleV2)[name] = {**rules[name], key: value}
        assert synthesized_rules(doc) != planned_rules(example_plan), (name, key)
    doc = copy.deepcopy(example_json)
    del resources(doc, NetworkingSecgroupRuleV2)["rule_vrrp_from_members"]
    assert synthesized_rules(doc) != planned_rules(example_plan)


# --- the construct and the stack read the plan alone -----------------------------------------------
def config_imports(source: str) -> list[str]:
    """What a module imports from cluster.config (the validated input)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "cluster.config":
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "cluster":
            found += [alias.name for alias in node.names if alias.name == "config"]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name == "cluster.config"]
    return found


def test_the_construct_and_the_stack_import_nothing_from_the_config():
    """stacks/ builds from the plan; only the entry point (app.py) loads the configs."""
    for module in sorted((ROOT / "stacks").glob("*.py")):
        if module.name != "app.py":
            assert config_imports(module.read_text()) == [], module.name


def test_a_module_that_imports_the_config_is_caught():
    """Negative control of the check above."""
    assert config_imports("from cluster.config import ClusterConfig\n") == ["ClusterConfig"]
    assert config_imports("from cluster import config\nimport cluster.config\n") == ["config", "cluster.config"]
