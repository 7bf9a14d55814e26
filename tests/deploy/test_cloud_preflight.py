"""`python -m ops preflight` against the loopback cloud: each fault made for real in the cloud (or named
by the config), refused before anything is created, each with its negative control: the same cloud
without the fault passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud import paths
from ops import Exit
from ops.__main__ import main
from tests.conftest import DELETE, ROOT, config_from, example_data, synth, with_changes

pytestmark = pytest.mark.cloud


def write_cluster(tmp: Path, changes: dict) -> tuple[Path, Path]:
    """The config file and its synthesized stack, as `make synth` would leave them."""
    data = with_changes(example_data(), changes)
    config = tmp / f"{data['name']}.yaml"
    config.write_text(yaml.safe_dump(data))
    stack = tmp / "stacks" / data["name"] / "cdk.tf.json"
    stack.parent.mkdir(parents=True, exist_ok=True)
    stack.write_text(json.dumps(synth(config_from(changes))))
    return config, stack


@pytest.fixture
def preflight(cloud, tmp_path, monkeypatch, capsys):
    """Run preflight on the example with `changes`: (exit code, the --json document)."""
    monkeypatch.setenv("OS_CLOUD", paths.CLOUD)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(paths.CLOUDS_YAML))

    def run(changes: dict | None = None) -> tuple[int, dict]:
        config, stack = write_cluster(tmp_path, changes or {})
        capsys.readouterr()
        code = main(["preflight", "--config", str(config), "--stack", str(stack), "--json"])
        out = capsys.readouterr()
        assert code in (0, 1), out.err
        doc = json.loads(out.out)
        assert doc["ok"] == (code == 0) and doc["notes"] == [], doc
        return code, doc

    return run


def fields(doc: dict) -> list[tuple[str, str]]:
    return [(p["check"], p["field"]) for p in doc["problems"]]


def test_the_seeded_cloud_passes_the_example(preflight):
    code, doc = preflight()
    assert code == 0 and doc["problems"] == []
    assert set(doc["checks"]) >= {"network", "subnet", "addresses", "image", "flavor", "key-pair", "quotas"}


WRONG_NAMES = {
    "network.name": ("network", {"network.name": "demo-nett"}),
    "network.subnet.name": ("subnet", {"network.subnet.name": "demo-subnett"}),
    "nodes.image": ("image", {"nodes.image": "ubuntu-42.04"}),
    "nodes.flavor": ("flavor", {"nodes.flavor": "m1.huge"}),
    "nodes.key_pair": ("key-pair", {"nodes.key_pair": "nobody"}),
    "vip.floating_ip_pool": ("floating-ip-pool", {"vip.floating_ip_pool": "publik"}),
    "nodes.extra_security_groups[0]": ("security-groups", {"nodes.extra_security_groups": ["no-such-group"]}),
}


@pytest.mark.parametrize("field", WRONG_NAMES)
def test_a_wrong_name_is_refused_naming_the_field_and_the_value(preflight, field):
    check, changes = WRONG_NAMES[field]
    code, doc = preflight(changes)
    assert code == Exit.REFUSED and fields(doc) == [(check, field)], doc
    (problem,) = doc["problems"]
    value = str(next(iter(changes.values())))
    assert problem["message"].startswith(f"{field}: ") and value.strip("[]'") in problem["message"]
    assert "\n" not in problem["message"]


def test_a_pool_with_a_router_to_the_subnet_passes_one_without_is_refused(cloud, preflight):
    assert preflight({"vip.floating_ip_pool": "public"})[0] == 0
    made = cloud.sdk(
        """
n = conn.network
net = n.create_network(name='lonely-public', is_router_external=True)
n.create_subnet(network_id=net.id, name='lonely-public-subnet', ip_version=4, cidr='100.64.0.0/24')
result = net.id
""",
        admin=True,
    )
    try:
        code, doc = preflight({"vip.floating_ip_pool": "lonely-public"})
        assert code == Exit.REFUSED and fields(doc) == [("router", "vip.floating_ip_pool")], doc
        assert "no router joins subnet demo-subnet" in doc["problems"][0]["message"]
    finally:
        cloud.sdk(f"conn.network.delete_network({made!r})", admin=True)


def test_an_extra_security_group_by_id_passes_by_name_it_is_refused_with_its_id(cloud, preflight):
    group_id = cloud.sdk("[g.id for g in conn.network.security_groups(name='default')][0]")
    assert preflight({"nodes.extra_security_groups": [group_id]})[0] == 0
    code, doc = preflight({"nodes.extra_security_groups": ["default"]})
    assert code == Exit.REFUSED and f"ports take its id ({group_id})" in doc["problems"][0]["message"]


def test_a_taken_vip_address_is_refused_and_passes_once_the_port_is_gone(cloud, preflight):
    port = cloud.sdk(
        "n = conn.network\nnet = n.find_network('demo-net')\n"
        "result = n.create_port(network_id=net.id, name='squatter', fixed_ips=[{'ip_address': '192.0.2.10'}]).id"
    )
    try:
        code, doc = preflight()
        assert code == Exit.REFUSED and fields(doc) == [("addresses", "vip.address")], doc
        assert "already held by port squatter" in doc["problems"][0]["message"]
    finally:
        cloud.sdk(f"conn.network.delete_port({port!r})")
    assert preflight()[0] == 0


def test_the_clusters_own_ports_on_its_addresses_pass(cloud, preflight):
    """A re-run on a deployed cluster: the ports holding its addresses carry the names the stack gives them."""
    made = cloud.sdk(
        """
n = conn.network
net = n.find_network('demo-net')
result = [n.create_port(network_id=net.id, name=name, fixed_ips=[{'ip_address': ip}],
                        allowed_address_pairs=[{'ip_address': '192.0.2.10'}] if ip != '192.0.2.10' else []).id
          for name, ip in [('demo-vip', '192.0.2.10'), ('demo-cp-1-port', '192.0.2.11')]]
"""
    )
    try:
        assert preflight()[0] == 0
        # The same ports under another cluster's name are someone else's.
        code, doc = preflight({"name": "other", "nodes.members": DELETE})
        assert code == Exit.REFUSED and ("addresses", "vip.address") in fields(doc)
        assert ("address-pairs", "vip.address") in fields(doc)
    finally:
        for port in made:
            cloud.sdk(f"conn.network.delete_port({port!r})")


def test_the_vip_in_another_ports_address_pairs_is_refused(cloud, preflight):
    port = cloud.sdk(
        "n = conn.network\nnet = n.find_network('demo-net')\n"
        "result = n.create_port(network_id=net.id, name='other-vrrp', fixed_ips=[{'ip_address': '192.0.2.50'}],"
        " allowed_address_pairs=[{'ip_address': '192.0.2.0/28'}]).id"
    )
    try:
        code, doc = preflight()
        assert code == Exit.REFUSED and fields(doc) == [("address-pairs", "vip.address")], doc
        assert "other-vrrp already carries it" in doc["problems"][0]["message"]
    finally:
        cloud.sdk(f"conn.network.delete_port({port!r})")
    assert preflight()[0] == 0


SHARED = {
    "network.name": "shared-net",
    "network.subnet.name": "shared-subnet",
    "network.subnet.cidr": "198.51.100.0/24",
    "network.subnet.gateway": "198.51.100.1",
    "vip.address": "198.51.100.10",
    "nodes.members": DELETE,
    "access.client_cidrs": ["198.51.100.0/24"],
}


def test_another_projects_shared_network_is_refused_for_the_policy(preflight):
    code, doc = preflight(SHARED)
    assert code == Exit.REFUSED and fields(doc) == [("policy", "network.name")], doc
    assert "Neutron's default policy lets only the network's owner or an admin" in doc["problems"][0]["message"]


def test_a_network_without_port_security_is_refused_and_passes_once_it_is_on(cloud, preflight):
    net = cloud.sdk(
        """
n = conn.network
net = n.create_network(name='nosec-net', port_security_enabled=False)
n.create_subnet(network_id=net.id, name='nosec-subnet', ip_version=4, cidr='10.9.0.0/24', gateway_ip='10.9.0.1')
result = net.id
"""
    )
    changes = {
        "network.name": "nosec-net",
        "network.subnet.name": "nosec-subnet",
        "network.subnet.cidr": "10.9.0.0/24",
        "network.subnet.gateway": "10.9.0.1",
        "vip.address": "10.9.0.10",
        "nodes.members": DELETE,
        "access.client_cidrs": ["10.9.0.0/24"],
    }
    try:
        code, doc = preflight(changes)
        assert code == Exit.REFUSED and fields(doc) == [("port-security", "network.name")], doc
        cloud.sdk(f"conn.network.update_network({net!r}, port_security_enabled=True)")
        assert preflight(changes)[0] == 0
    finally:
        cloud.sdk(f"conn.network.delete_network({net!r})")


def test_a_small_flavor_is_refused_with_kubeadms_minimum(preflight):
    code, doc = preflight({"nodes.flavor": "m1.small"})
    assert code == Exit.REFUSED and fields(doc) == [("flavor", "nodes.flavor")], doc
    assert "1 vCPUs and 2048 MB: kubeadm needs at least 2 vCPUs and 1700 MB" in doc["problems"][0]["message"]


PROJECT = "conn.identity.find_project('demo').id"


def test_tight_quotas_are_refused_and_pass_once_raised(cloud, preflight):
    project = cloud.sdk(PROJECT, admin=True)

    def set_quotas(ports: int, instances: int, cores: int) -> None:
        compute = {"quota_set": {"instances": instances, "cores": cores}}
        cloud.sdk(
            f"conn.network.update_quota({project!r}, port={ports})\n"
            f"conn.compute.put('/os-quota-sets/{project}', json={compute!r})\nresult = None",
            admin=True,
        )

    set_quotas(ports=3, instances=2, cores=20)
    try:
        code, doc = preflight()
        assert code == Exit.REFUSED and sorted(fields(doc)) == [("quotas", "nodes.count"), ("quotas", "nodes.count")], (
            doc
        )
        messages = " | ".join(p["message"] for p in doc["problems"])
        assert "nodes.count: 4 more ports — the project's quota is 3" in messages
        assert "nodes.count: 3 more instances — the project's quota is 2" in messages
        set_quotas(ports=500, instances=10, cores=8)
        code, doc = preflight()
        assert fields(doc) == [("quotas", "nodes.flavor")] and "12 more vCPUs" in doc["problems"][0]["message"]
    finally:
        set_quotas(ports=500, instances=10, cores=20)
    assert preflight()[0] == 0


def test_the_command_line_prints_one_line_per_problem_and_exits_refused(cloud, tmp_path):
    config, stack = write_cluster(tmp_path, {"network.name": "demo-nett", "nodes.flavor": "m1.small"})
    env = {**os.environ, "OS_CLOUD": paths.CLOUD, "OS_CLIENT_CONFIG_FILE": str(paths.CLOUDS_YAML)}
    argv = [sys.executable, "-m", "ops", "preflight", "--config", str(config), "--stack", str(stack)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == Exit.REFUSED, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("network.name: demo-nett — no such network")
    assert lines[1].startswith("nodes.flavor: m1.small — 1 vCPUs and 2048 MB")
    assert lines[2].startswith("preflight: 2 problem(s) in ") and lines[2].endswith("nothing was created")
    assert "Traceback" not in done.stderr


def test_a_relative_clouds_yaml_path_is_refused_naming_it(tmp_path, cloud):
    config, stack = write_cluster(tmp_path, {})
    relative = os.path.relpath(paths.CLOUDS_YAML, ROOT)
    env = {**os.environ, "OS_CLOUD": paths.CLOUD, "OS_CLIENT_CONFIG_FILE": relative}
    argv = [sys.executable, "-m", "ops", "preflight", "--config", str(config), "--stack", str(stack)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: OS_CLIENT_CONFIG_FILE: {relative} — a relative path"), done.stderr
