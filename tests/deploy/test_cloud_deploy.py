"""Deploy the synthesized stack with the real Terraform and provider against the loopback cloud, then
read the result back through the OpenStack API (openstacksdk), not from our JSON.

Terraform (or OpenTofu: ENGINE=tofu) and the provider come from the environment (`make setup`:
TF_CLI_CONFIG_FILE names the provider mirror); the test skips, saying why, where either is missing.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from cloud import paths
from cluster.plan import KUBEADM_CONFIG, make_plan
from ops import openstack, preflight
from ops.inventory import load_inventory, terraform_node_addresses
from tests.conftest import DELETE, config_from, synth
from tests.kubeadm import kubeadm_validate
from tfcheck.engine import ENGINES, engine
from tfcheck.terraform import TOOLS_BIN
from userdata.cloudconfig import written_files
from userdata.render import render_cloud_config
from userdata.stack import SynthesizedStack

pytestmark = pytest.mark.cloud


def terraform(
    workdir: Path, *args: str, check: bool = True, command: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The engine ENGINE names (or `command`) on the stack in `workdir`."""
    command = command or engine()
    env = {
        **os.environ,
        "OS_CLOUD": paths.CLOUD,
        "OS_CLIENT_CONFIG_FILE": str(paths.CLOUDS_YAML),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    proc = subprocess.run(
        [command, *args, "-no-color"], cwd=workdir, env=env, text=True, capture_output=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{command} {args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def preflight_env() -> dict[str, str]:
    return {"OS_CLOUD": paths.CLOUD, "OS_CLIENT_CONFIG_FILE": str(paths.CLOUDS_YAML)}


def write_config(doc: dict, work: Path) -> None:
    """The synthesized JSON in `work`, its local state there too."""
    doc = json.loads(json.dumps(doc))
    doc["terraform"]["backend"] = {"local": {"path": str(work / "terraform.tfstate")}}
    (work / "main.tf.json").write_text(json.dumps(doc, indent=1))


def workdir_for(doc: dict, tmp: Path) -> Path:
    write_config(doc, tmp)
    init = terraform(tmp, "init", "-input=false", check=False)
    if init.returncode != 0:
        pytest.skip(
            f"{engine()} init found no provider (make setup builds it into the mirror): {init.stderr.strip()[-300:]}"
        )
    return tmp


def read_back(cloud, cluster: str) -> dict:
    return cloud.sdk(
        f"""
n, c = conn.network, conn.compute
ports = {{p.name: p for p in n.ports() if p.name.startswith({cluster + "-"!r})}}
sg = n.find_security_group({cluster + "-control-plane"!r})
servers = {{s.name: s for s in c.servers(details=True, all_projects=True) if s.name.startswith({cluster + "-"!r})}}
groups = [g for g in c.server_groups(all_projects=True) if g.name.startswith({cluster!r})]
result = {{
  'ports': {{k: {{'pairs': p.allowed_address_pairs, 'security': p.is_port_security_enabled, 'mac': p.mac_address,
              'ips': [i['ip_address'] for i in p.fixed_ips], 'device_id': p.device_id, 'groups': p.security_group_ids,
              'id': p.id}} for k, p in ports.items()}},
  'rules': sorted([[r.direction, r.ether_type, r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix,
                    r.remote_group_id == sg.id] for r in n.security_group_rules(security_group_id=sg.id)],
                  key=str) if sg else None,
  'sg': sg.id if sg else None,
  'servers': {{k: {{'user_data': s.user_data, 'group': s.server_groups, 'status': s.status}}
              for k, s in servers.items()}},
  'groups': [[g.name, g.policy, sorted(g.member_ids)] for g in groups],
  'fips': [[f.port_id, f.floating_ip_address] for f in n.ips()],
}}
""",
        admin=True,
    )


def expected_rules(doc: dict) -> list:
    rules = []
    for rule in doc["resource"]["openstack_networking_secgroup_rule_v2"].values():
        # The provider leaves out a zero (gophercloud's omitempty): ICMP echo's code 0 reaches Neutron as
        # no code at all (any code of type 8), and reads back as 0, so Terraform sees no drift.
        rules.append(
            [
                rule["direction"],
                rule["ethertype"],
                rule.get("protocol"),
                rule.get("port_range_min") or None,
                rule.get("port_range_max") or None,
                rule.get("remote_ip_prefix"),
                "remote_group_id" in rule,
            ]
        )
    return rules


# allow_destroy lifts prevent_destroy, so that the test can tear down what it deployed.
CONFIGS = {
    "example": {"allow_destroy": True},
    "five-nodes-floating-ip": {
        "allow_destroy": True,
        "name": "five",
        "nodes.count": 5,
        "nodes.members": DELETE,
        "vip.floating_ip_pool": "public",
    },
}


@pytest.mark.parametrize("name", CONFIGS)
def test_deploy_reads_back_as_synthesized_and_destroy_leaves_nothing(cloud, tmp_path, name):
    config = config_from(CONFIGS[name])
    doc = synth(config)
    work = workdir_for(doc, tmp_path)
    try:
        check_deployed(cloud, work, config, doc)
    except BaseException:
        terraform(work, "destroy", "-auto-approve", "-input=false", check=False)  # the next test needs the addresses
        raise
    terraform(work, "destroy", "-auto-approve", "-input=false")
    after = read_back(cloud, config.name)
    assert after["ports"] == {} and after["servers"] == {} and after["groups"] == [] and after["fips"] == []
    assert after["sg"] is None


def check_deployed(cloud, work: Path, config, doc: dict) -> None:
    terraform(work, "apply", "-auto-approve", "-input=false")
    outputs = {k: v["value"] for k, v in json.loads(terraform(work, "output", "-json").stdout).items()}
    got = read_back(cloud, config.name)
    vip = str(config.vip.address)
    nodes = sorted(outputs["node_addresses"])
    assert len(nodes) == config.nodes.count

    for node in nodes:
        port = got["ports"][f"{node}-port"] if f"{node}-port" in got["ports"] else None
        assert port is not None, sorted(got["ports"])
        assert port["pairs"] == [{"ip_address": vip, "mac_address": port["mac"]}]
        assert port["security"] is True and port["groups"] == [got["sg"]]
        assert port["ips"] == [outputs["node_addresses"][node]]
        assert port["device_id"]  # bound to its server by the compute service
    vip_port = got["ports"][f"{config.name}-vip"]
    assert vip_port["ips"] == [vip] and vip_port["device_id"] == ""
    ingress = [r for r in got["rules"] if r[0] == "ingress"]
    assert ingress == sorted(expected_rules(doc), key=str)
    assert sorted(r[1] for r in got["rules"] if r[0] == "egress") == ["IPv4", "IPv6"]  # Neutron's defaults
    (group,) = got["groups"]
    assert group[1] == ("anti-affinity" if config.nodes.anti_affinity == "hard" else "soft-anti-affinity")
    assert len(group[2]) == config.nodes.count
    # each server's user_data is its node's, rendered with the addresses Neutron actually gave
    plan = make_plan(config)
    for node in nodes:
        server = got["servers"][node]
        assert server["status"] == "ACTIVE"
        user_data = base64.b64decode(server["user_data"]).decode()
        assert user_data == render_cloud_config(plan, node, outputs["node_addresses"], outputs.get("floating_ip"))
        # kubeadm itself accepts the kubeadm.yaml this VM was given (the join secrets filled in as
        # the join does): the addresses Neutron allocated and the floating IP are in it
        kubeadm_file = written_files(user_data)[KUBEADM_CONFIG].content
        assert kubeadm_validate(kubeadm_file).returncode == 0, kubeadm_validate(kubeadm_file).stderr
    if config.vip.floating_ip_pool:
        assert [fip[0] for fip in got["fips"]] == [vip_port["id"]]
        assert outputs["floating_ip"] == got["fips"][0][1]

    # The operator's tool finds the nodes where Neutron put them: from the deployed stack's
    # node_addresses output when the config gives no addresses, from the JSON when it does.
    inventory = load_inventory(plan, work / "main.tf.json")
    assert {n.name: n.address for n in inventory.nodes} == outputs["node_addresses"]
    assert terraform_node_addresses(work) == outputs["node_addresses"]

    # day 2 with nothing changed: Terraform plans nothing
    assert terraform(work, "plan", "-input=false", "-detailed-exitcode", check=False).returncode == 0
    # ... and neither does the other engine on the same state: a cluster moves between Terraform
    # and OpenTofu without a resource change (docs/toolchain.md), both ways as ENGINE alternates
    (other,) = set(ENGINES) - {engine()}
    if (TOOLS_BIN / other).exists():
        terraform(work, "init", "-input=false", command=other)
        done = terraform(work, "plan", "-input=false", "-detailed-exitcode", check=False, command=other)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

    # preflight again on the deployed cluster: its own ports, group, servers and floating IP are
    # its own, neither taken addresses nor quota it still needs
    check = preflight.run(config, plan, SynthesizedStack(doc), openstack.connect(preflight_env(), work)[1])
    assert check == ([], []), check


# --- what Neutron refuses, as a user running `cdktf deploy` sees it ------------------------------

SHARED = {
    "allow_destroy": True,
    "name": "shared",
    "network.name": "shared-net",
    "network.subnet.name": "shared-subnet",
    "network.subnet.cidr": "198.51.100.0/24",
    "network.subnet.gateway": "198.51.100.1",
    "vip.address": "198.51.100.10",
    "access.client_cidrs": ["198.51.100.0/24"],
    "access.admin_cidrs": ["203.0.113.0/24"],
    **{f"nodes.members.{i}.address": f"198.51.100.{11 + i}" for i in range(3)},
}


def failed_apply(cloud, tmp_path, changes: dict) -> str:
    """Apply a config that the cloud refuses; return Terraform's error text, after tearing down the rest."""
    config = config_from(changes)
    work = workdir_for(synth(config), tmp_path)
    proc = terraform(work, "apply", "-auto-approve", "-input=false", check=False)
    terraform(work, "destroy", "-auto-approve", "-input=false")
    assert proc.returncode != 0, f"the apply succeeded:\n{proc.stdout[-2000:]}"
    return " ".join(proc.stderr.split())


def test_a_shared_network_of_another_project_fails_with_neutrons_403(cloud, tmp_path):
    message = failed_apply(cloud, tmp_path, SHARED)
    assert "403" in message and "is disallowed by policy" in message, message
    assert "rule:create_port:allowed_address_pairs" in message or "rule:create_port:fixed_ips" in message, message


def test_a_floating_ip_pool_no_router_reaches_fails_with_neutrons_404(cloud, tmp_path):
    cloud.sdk("""
n = conn.network
net = n.create_network(name='lonely-net')
n.create_subnet(network_id=net.id, name='lonely-subnet', ip_version=4, cidr='192.0.2.0/24', gateway_ip='192.0.2.1')
""")
    message = failed_apply(
        cloud,
        tmp_path,
        {
            "allow_destroy": True,
            "name": "lonely",
            "network.name": "lonely-net",
            "network.subnet.name": "lonely-subnet",
            "vip.floating_ip_pool": "public",
        },
    )
    assert "404" in message and "is not reachable from subnet" in message, message


def test_an_address_already_in_use_fails_with_neutrons_409(cloud, tmp_path):
    holder = cloud.sdk("""
n = conn.network
sub = n.find_subnet('demo-subnet')
result = n.create_port(network_id=sub.network_id, name='squatter',
                       fixed_ips=[{'subnet_id': sub.id, 'ip_address': '192.0.2.12'}]).id
""")
    try:
        message = failed_apply(cloud, tmp_path, {"allow_destroy": True, "name": "taken"})
    finally:
        cloud.sdk(f"conn.network.delete_port({holder!r})")
    assert "409" in message and "IP address 192.0.2.12 already allocated in subnet" in message, message
