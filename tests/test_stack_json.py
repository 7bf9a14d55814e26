"""The reader of the synthesized JSON: the types it knows are the provider's, references resolve by
type and name, and Neutron-allocated addresses are filled in only where given."""

from __future__ import annotations

import copy

import pytest
from cdktf_cdktf_provider_openstack.compute_instance_v2 import ComputeInstanceV2
from cdktf_cdktf_provider_openstack.networking_port_v2 import NetworkingPortV2
from cdktf_cdktf_provider_openstack.networking_secgroup_rule_v2 import NetworkingSecgroupRuleV2
from cdktf_cdktf_provider_openstack.networking_secgroup_v2 import NetworkingSecgroupV2

from tests.conftest import DELETE, config_from, synth
from userdata import stack
from userdata.render import KEEPALIVED_CONF, render_cloud_config
from userdata.stack import StackError, SynthesizedStack


def test_the_types_it_reads_are_the_providers():
    assert (stack.INSTANCE, stack.PORT, stack.SECGROUP, stack.RULE) == (
        ComputeInstanceV2.TF_RESOURCE_TYPE,
        NetworkingPortV2.TF_RESOURCE_TYPE,
        NetworkingSecgroupV2.TF_RESOURCE_TYPE,
        NetworkingSecgroupRuleV2.TF_RESOURCE_TYPE,
    )


def test_nodes_are_the_instances_with_their_ports_address_and_cloud_config(example_json, example_plan):
    nodes = SynthesizedStack(example_json).nodes()
    assert [(n.name, n.address, n.port.resource) for n in nodes] == [
        (f"demo-cp-{i}", f"192.0.2.1{i}", f"port_demo-cp-{i}") for i in (1, 2, 3)
    ]
    assert nodes[1].user_data == render_cloud_config(example_plan, "demo-cp-2")
    assert sorted(nodes[1].containers) == ["haproxy", "keepalived"]
    assert SynthesizedStack(example_json).outputs["vip"] == "192.0.2.10"


def test_a_reference_to_another_type_is_an_error_naming_the_resource(example_json):
    doc = copy.deepcopy(example_json)
    doc["resource"][stack.INSTANCE]["instance_demo-cp-2"]["network"] = [
        {"port": "${openstack_networking_network_v2.x.id}"}
    ]
    expected = (
        r"^openstack_compute_instance_v2\.instance_demo-cp-2: expected a reference \$\{openstack_networking_port_v2"
    )
    with pytest.raises(StackError, match=expected):
        _ = SynthesizedStack(doc).instances


def test_neutron_allocated_addresses_are_filled_in_only_where_given():
    synthesized = SynthesizedStack(synth(config_from({"nodes.members": DELETE})))
    inst = synthesized.instance("demo-cp-2")
    assert synthesized.literal_address(inst) is None
    with pytest.raises(StackError, match=r"instance_demo-cp-2: its port has no literal address and none was given"):
        synthesized.node(inst)
    allocated = {"demo-cp-1": "192.0.2.51", "demo-cp-2": "192.0.2.52", "demo-cp-3": "192.0.2.53"}
    node = synthesized.node(inst, allocated)
    assert node.address == "192.0.2.52"
    assert "unicast_src_ip 192.0.2.52" in node.file(KEEPALIVED_CONF.host_path).content and "${" not in node.user_data


def test_user_data_edits_leave_the_original_untouched(example_json):
    before = copy.deepcopy(example_json)
    edited = stack.with_user_data(example_json, lambda inst: inst.user_data + f"# {inst.name}\n")
    assert example_json == before
    assert stack.user_data_by_node(edited)["demo-cp-3"].endswith("# demo-cp-3\n")
