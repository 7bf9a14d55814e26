"""A 5-node config without members (Neutron allocates the addresses) and with a floating IP, deployed
with `cdktf deploy` on the loopback cloud: its VIP serves, directly and through the floating IP from
the external network's side (the router's NAT follows Neutron's association), and `ops status`
finds the nodes at the addresses the stack's outputs give.
"""

from __future__ import annotations

import json
import time

import pytest

from cloud import playground
from tests.conftest import DELETE, example_data, with_changes

pytestmark = [pytest.mark.cloud, pytest.mark.lab]

NAME = "five"
SERVE_WITHIN_S = 300  # a deadline for a loaded machine; the figure is `python -m cloud.bench --endpoint`'s
CHANGES = {
    "name": NAME,
    "nodes.count": 5,
    "nodes.members": DELETE,
    "vip.floating_ip_pool": "public",
    "access.client_cidrs": ["192.0.2.0/24", "203.0.113.0/24"],
}


@pytest.fixture(scope="module")
def five(reach, cloud, tmp_path_factory):
    project = playground.project_copy(tmp_path_factory.mktemp("five") / "project")
    config = with_changes(example_data(), CHANGES)
    since = len(playground.hypervisor_log(cloud.run_folder))
    playground.cdktf(project, NAME, config, "deploy")
    stack = project / "cdktf.out" / "stacks" / NAME
    try:
        playground.wait_booted(cloud.run_folder, list(playground.outputs(stack)["node_addresses"]), since)
        yield {"project": project, "stack": stack, "outputs": playground.outputs(stack), "config": config}
    finally:
        playground.cdktf(project, NAME, {**config, "allow_destroy": True}, "destroy")


def external_client(cloud) -> str:
    return json.loads((cloud.run_folder / "hypervisor-ready.json").read_text())["client_external"]


def test_five_nodes_with_neutrons_addresses_serve_the_vip_and_ops_status_is_healthy(reach, five):
    vip, port = five["outputs"]["vip"], five["config"]["ports"]["frontend"]
    assert len(five["outputs"]["node_addresses"]) == 5
    assert playground.first_answer(reach.client_netns, vip, port, SERVE_WITHIN_S) is not None
    stack = playground.as_nodes_run_it(five["stack"] / "cdk.tf.json")
    deadline = time.monotonic() + 90
    while (done := playground.ops(reach, five["project"], NAME, stack, "status")).returncode != 0:
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(3)
    for name, address in five["outputs"]["node_addresses"].items():
        assert name in done.stdout and address in done.stdout


def test_the_floating_ip_reaches_the_vip_from_the_external_side_while_neutron_associates_it(reach, five, cloud):
    vip, port = five["outputs"]["vip"], five["config"]["ports"]["frontend"]
    fip, source = five["outputs"]["floating_ip"], external_client(cloud)
    assert playground.first_answer(reach.client_netns, vip, port, SERVE_WITHIN_S) is not None
    assert playground.first_answer(reach.client_netns, fip, port, 15, source=source) is not None
    # The negative control: the association removed in Neutron, the router forgets the floating IP.
    port_id = cloud.sdk(f"result = conn.network.find_ip({fip!r}).port_id")
    cloud.sdk(f"f = conn.network.find_ip({fip!r}); conn.network.update_ip(f, port_id=None); result = 1")
    try:
        deadline = time.monotonic() + 15
        while playground.readyz(reach.client_netns, fip, port, source=source, timeout=1) is not None:
            assert time.monotonic() < deadline, "the floating IP still answers without its association"
            time.sleep(0.5)
        assert playground.readyz(reach.client_netns, vip, port) is not None
    finally:
        cloud.sdk(f"f = conn.network.find_ip({fip!r}); conn.network.update_ip(f, port_id={port_id!r}); result = 1")
    assert playground.first_answer(reach.client_netns, fip, port, 15, source=source) is not None
