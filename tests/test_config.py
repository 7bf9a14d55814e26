"""Bad input is rejected before anything is synthesized, one line per problem naming field, value and rule."""

from __future__ import annotations

import re

import pydantic
import pytest
import yaml

from cluster.config import ALLOWED_NODE_COUNTS, ConfigError, load_config, load_configs, parse_config
from cluster.plan import make_plan
from tests.conftest import DELETE, EXAMPLE, example_data, with_changes

M = "nodes.members"
# A valid remote state on an S3-compatible store, for the state cases to vary.
S3 = {
    "backend": "s3",
    "bucket": "kha-state",
    "region": "RegionOne",
    "endpoint": "https://object.example.org",
    "use_path_style": True,
}

# (case id, changes to the example, a regex the single reported problem must match)
REJECTED = [
    ("malformed-vip", {"vip.address": "192.0.2.300"}, r"^vip\.address: '192\.0\.2\.300' — .*IPv4"),
    ("malformed-node-address", {f"{M}.1.address": "192.0.2"}, r"^nodes\.members\[1\]\.address: '192\.0\.2' — .*IPv4"),
    (
        "malformed-subnet-cidr",
        {"network.subnet.cidr": "192.0.2.0/33"},
        r"^network\.subnet\.cidr: '192\.0\.2\.0/33' — not an IPv4 CIDR \('33' is not a valid netmask\); "
        r"write address/prefix: four numbers 0-255 and a prefix length 0-32, such as 10\.0\.0\.0/8$",
    ),
    (
        "subnet-host-bits",
        {"network.subnet.cidr": "192.0.2.5/24"},
        r"^network\.subnet\.cidr: '192\.0\.2\.5/24' — host bits are set; did you mean 192\.0\.2\.0/24\?",
    ),
    (
        "malformed-client-cidr",
        {"access.client_cidrs": ["10.0.0.0/8", "bogus"]},
        r"^access\.client_cidrs\[1\]: 'bogus' — not an IPv4 CIDR",
    ),
    (
        "vip-outside-subnet",
        {"vip.address": "198.51.100.10"},
        r"^vip\.address: 198\.51\.100\.10 — must be inside network\.subnet\.cidr 192\.0\.2\.0/24",
    ),
    (
        "vip-is-network-address",
        {"vip.address": "192.0.2.0"},
        r"^vip\.address: 192\.0\.2\.0 — is the subnet's network address",
    ),
    (
        "vip-is-broadcast",
        {"vip.address": "192.0.2.255"},
        r"^vip\.address: 192\.0\.2\.255 — is the subnet's broadcast address",
    ),
    ("vip-is-gateway", {"vip.address": "192.0.2.1"}, r"^vip\.address: 192\.0\.2\.1 — is the subnet's gateway"),
    (
        "vip-is-default-gateway",
        {"network.subnet.gateway": DELETE, "vip.address": "192.0.2.1"},
        r"^vip\.address: 192\.0\.2\.1 — is the subnet's gateway",
    ),
    (
        "vip-equals-node",
        {f"{M}.2.address": "192.0.2.10"},
        r"^nodes\.members\[2\]\.address: 192\.0\.2\.10 — equals vip\.address",
    ),
    (
        "gateway-outside-subnet",
        {"network.subnet.gateway": "10.0.0.1"},
        r"^network\.subnet\.gateway: 10\.0\.0\.1 — must be a host address inside 192\.0\.2\.0/24",
    ),
    (
        "subnet-too-small",
        {
            "network.subnet.cidr": "192.0.2.8/30",
            "network.subnet.gateway": DELETE,
            "vip.address": "192.0.2.10",
            M: DELETE,
        },
        r"^network\.subnet\.cidr: 192\.0\.2\.8/30 — a /29 or larger",
    ),
    (
        "duplicate-node-name",
        {f"{M}.2.name": "demo-cp-1"},
        r"^nodes\.members\[2\]\.name: demo-cp-1 — duplicate of nodes\.members\[0\]\.name",
    ),
    (
        "duplicate-node-address",
        {f"{M}.2.address": "192.0.2.11"},
        r"^nodes\.members\[2\]\.address: 192\.0\.2\.11 — duplicate of nodes\.members\[0\]\.address",
    ),
    (
        "node-outside-subnet",
        {f"{M}.0.address": "198.51.100.11"},
        r"^nodes\.members\[0\]\.address: 198\.51\.100\.11 — must be inside network\.subnet\.cidr",
    ),
    (
        "node-is-gateway",
        {f"{M}.0.address": "192.0.2.1"},
        r"^nodes\.members\[0\]\.address: 192\.0\.2\.1 — is the subnet's gateway",
    ),
    (
        "some-members-without-address",
        {f"{M}.1.address": DELETE},
        r"^nodes\.members: some members without address — give every member an address, or none",
    ),
    (
        "members-do-not-match-count",
        {f"{M}.2": DELETE},
        r"^nodes\.members: 2 members — must list exactly nodes\.count = 3 members",
    ),
    (
        "node-count-two",
        {"nodes.count": 2, M: DELETE},
        r"^nodes\.count: 2 — allowed: 3, 5, 7 \(stacked etcd needs an odd count",
    ),
    ("node-count-four", {"nodes.count": 4, M: DELETE}, r"^nodes\.count: 4 — allowed: 3, 5, 7"),
    ("node-count-one", {"nodes.count": 1, M: DELETE}, r"^nodes\.count: 1 — allowed: 3, 5, 7"),
    (
        "node-name-not-dns",
        {f"{M}.0.name": "CP_1"},
        r"^nodes\.members\[0\]\.name: 'CP_1' — a DNS label: lowercase letters, digits and '-', starting with a "
        r"letter, ending with a letter or digit, at most 32 characters$",
    ),
    ("cluster-name-not-dns", {"name": "Demo Cluster"}, r"^name: 'Demo Cluster' — a DNS label: lowercase letters"),
    ("vrid-zero", {"vip.virtual_router_id": 0}, r"^vip\.virtual_router_id: 0 — must be at least 1$"),
    ("vrid-256", {"vip.virtual_router_id": 256}, r"^vip\.virtual_router_id: 256 — must be at most 255$"),
    (
        "vrid-not-a-number",
        {"vip.virtual_router_id": "fifty"},
        r"^vip\.virtual_router_id: 'fifty' — must be a whole number, unquoted$",
    ),
    (
        "frontend-equals-apiserver",
        {"ports.frontend": 6443},
        r"^ports\.frontend: 6443 — must differ from ports\.apiserver \(6443\)",
    ),
    (
        "health-equals-frontend",
        {"ports.health": 9443},
        r"^ports\.health: 9443 — must differ from ports\.frontend and ports\.apiserver",
    ),
    (
        "metrics-equals-health",
        {"ports.metrics": 9444},
        r"^ports\.metrics: 9444 — must differ from ports\.frontend, ports\.apiserver and ports\.health",
    ),
    (
        "metrics-equals-apiserver",
        {"ports.metrics": 6443},
        r"^ports\.metrics: 6443 — must differ from ports\.frontend, ports\.apiserver and ports\.health",
    ),
    ("metrics-port-too-high", {"ports.metrics": 65536}, r"^ports\.metrics: 65536 — must be at most 65535$"),
    (
        "metrics-from-anywhere",
        {"access.monitoring_cidrs": ["0.0.0.0/0"]},
        r"^access\.monitoring_cidrs: 0\.0\.0\.0/0 — opens the metrics to the whole internet; name the CIDR of your "
        r"Prometheus",
    ),
    (
        "malformed-monitoring-cidr",
        {"access.monitoring_cidrs": ["10.0.0.1/8"]},
        r"^access\.monitoring_cidrs\[0\]: '10\.0\.0\.1/8' — host bits are set; did you mean 10\.0\.0\.0/8\?",
    ),
    ("port-too-high", {"ports.frontend": 70000}, r"^ports\.frontend: 70000 — must be at most 65535$"),
    ("port-zero", {"ports.apiserver": 0}, r"^ports\.apiserver: 0 — must be at least 1$"),
    (
        "image-without-tag",
        {"containers.haproxy": "haproxy"},
        r"^containers\.haproxy: 'haproxy' — pin the image with a version tag or, better, a digest",
    ),
    (
        "image-latest",
        {"containers.keepalived": "osixia/keepalived:latest"},
        r"^containers\.keepalived: 'osixia/keepalived:latest' — pin the image",
    ),
    (
        "image-bad-digest",
        {"containers.haproxy": "haproxy@sha256:1234"},
        r"^containers\.haproxy: 'haproxy@sha256:1234' — not an image reference",
    ),
    (
        "vrrp-password",
        {"vip.auth_pass": "averylongpassword"},
        r"^vip\.auth_pass: \(value hidden\) — secrets never go in this file; VRRP runs as version 3",
    ),
    (
        "typo-in-key",
        {"nodes.flavour": "m1.large"},
        r"^nodes\.flavour: unknown key — allowed keys here: count, image, flavor, key_pair",
    ),
    (
        "typo-at-top-level",
        {"acces": {}},
        r"^acces: unknown key — allowed keys here: name, network, vip, nodes, access, ports, containers, kubernetes, "
        "state",
    ),
    ("missing-required", {"nodes.image": DELETE}, r"^nodes\.image: missing — this field is required"),
    ("network-name-and-id", {"network.id": "4f1c"}, r"^network: give exactly one of 'name' or 'id'"),
    (
        "ssh-from-anywhere",
        {"access.admin_cidrs": ["0.0.0.0/0"]},
        r"^access\.admin_cidrs: 0\.0\.0\.0/0 — opens SSH to the whole internet; set access\.allow_ssh_from_anywhere: "
        r"true",
    ),
    (
        "api-from-anywhere",
        {"access.client_cidrs": ["0.0.0.0/0"]},
        r"^access\.client_cidrs: 0\.0\.0\.0/0 — opens the API to the whole internet; set "
        r"access\.allow_api_from_anywhere: true",
    ),
    (
        "no-client-cidrs",
        {"access.client_cidrs": []},
        r"^access\.client_cidrs: empty — name at least one CIDR that may reach the API",
    ),
    (
        "anti-affinity-typo",
        {"nodes.anti_affinity": "strict"},
        r"^nodes\.anti_affinity: 'strict' — allowed: 'hard' or 'soft'$",
    ),
    (
        "interface-too-long",
        {"network.interface": "a-very-long-interface-name"},
        r"^network\.interface: 'a-very-long-interface-name' — an interface name: 1-15 letters, digits, '_', '\.' or "
        r"'-'$",
    ),
    ("state-unknown-backend", {"state": {"backend": "gcs"}}, r"^state\.backend: 'gcs' — allowed: 'local' or 's3'$"),
    (
        "state-s3-without-region",
        {"state": {k: v for k, v in S3.items() if k != "region"}},
        r"^state\.region: missing — required with state\.backend: s3",
    ),
    (
        "state-bucket-on-local",
        {"state": {"bucket": "kha-state"}},
        r"^state\.bucket: kha-state — only used with state\.backend: s3",
    ),
    (
        "bucket-uppercase",
        {"state": {**S3, "bucket": "Kha_State"}},
        r"^state\.bucket: 'Kha_State' — not an S3 bucket name: may hold only lowercase letters, digits, dots and "
        r"hyphens",
    ),
    (
        "bucket-too-short",
        {"state": {**S3, "bucket": "ks"}},
        r"^state\.bucket: 'ks' — not an S3 bucket name: must be 3-63 characters long",
    ),
    (
        "bucket-too-long",
        {"state": {**S3, "bucket": "k" * 64}},
        r"^state\.bucket: 'k{64}' — not an S3 bucket name: must be 3-63 characters long",
    ),
    (
        "bucket-ends-with-hyphen",
        {"state": {**S3, "bucket": "kha-state-"}},
        r"^state\.bucket: 'kha-state-' — not an S3 bucket name: must start and end with a letter or digit",
    ),
    (
        "bucket-adjacent-dots",
        {"state": {**S3, "bucket": "kha..state"}},
        r"^state\.bucket: 'kha\.\.state' — not an S3 bucket name: must not contain two adjacent dots",
    ),
    (
        "bucket-ip-address",
        {"state": {**S3, "bucket": "192.168.5.4"}},
        r"^state\.bucket: '192\.168\.5\.4' — not an S3 bucket name: must not look like an IP address",
    ),
    (
        "bucket-xn-prefix",
        {"state": {**S3, "bucket": "xn--kha-state"}},
        r"^state\.bucket: 'xn--kha-state' — not an S3 bucket name: must not start with 'xn--'",
    ),
    (
        "bucket-s3alias-suffix",
        {"state": {**S3, "bucket": "kha-state-s3alias"}},
        r"^state\.bucket: 'kha-state-s3alias' — not an S3 bucket name: must not end with '-s3alias'",
    ),
    (
        "state-key-leading-slash",
        {"state": {**S3, "key": "/demo/terraform.tfstate"}},
        r"^state\.key: '/demo/terraform\.tfstate' — an object path such as .*no leading or trailing '/'",
    ),
    (
        "endpoint-plain-http",
        {"state": {**S3, "endpoint": "http://object.example.org"}},
        r"^state\.endpoint: http://object\.example\.org — must be https: .*set state\.allow_insecure_endpoint: true",
    ),
    (
        "endpoint-not-a-url",
        {"state": {**S3, "endpoint": "object.example.org"}},
        r"^state\.endpoint: object\.example\.org — an https URL with a host",
    ),
    (
        "endpoint-with-credentials",
        {"state": {**S3, "endpoint": "https://ec2key:hunter2@object.example.org"}},
        r"^state\.endpoint: \(value hidden\) — credentials never go in the endpoint URL",
    ),
    (
        "state-secret-key",
        {"state": {**S3, "secret_key": "hunter2"}},
        r"^state\.secret_key: \(value hidden\) — secrets never go in this file; the state backend reads "
        r"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
    ),
    (
        "state-access-key",
        {"state": {**S3, "access_key": "AKIAEXAMPLE"}},
        r"^state\.access_key: \(value hidden\) — secrets never go in this file",
    ),
    (
        "state-token",
        {"state": {**S3, "token": "hunter2"}},
        r"^state\.token: \(value hidden\) — secrets never go in this file",
    ),
    (
        "name-too-long-without-members",
        {"name": "a" * 28, M: DELETE},
        r"^name: a{28} \(28 characters\) — at most 27 characters without nodes\.members: the nodes are named "
        r"a{28}-cp-<n>, a DNS label of at most 32",
    ),
    (
        "name-too-long",
        {"name": "a" * 33},
        r"^name: 'a{33}' — a DNS label: .* at most 32 characters; this one has 33$",
    ),
    ("allow-destroy-quoted", {"allow_destroy": "true"}, r"^allow_destroy: 'true' — must be true or false, unquoted$"),
    ("allow-destroy-number", {"allow_destroy": 1}, r"^allow_destroy: 1 — must be true or false, unquoted$"),
    (
        "vip-ipv6",
        {"vip.address": "2001:db8::10"},
        r"^vip\.address: '2001:db8::10' — an IPv6 address; only IPv4 is supported",
    ),
    (
        "vip-integer",
        {"vip.address": 3221225994},
        r"^vip\.address: 3221225994 — not an IPv4 address; write one such as 192\.0\.2\.10$",
    ),
    (
        "client-cidr-ipv6",
        {"access.client_cidrs": ["2001:db8::/64"]},
        r"^access\.client_cidrs\[0\]: '2001:db8::/64' — an IPv6 CIDR; only IPv4 is supported$",
    ),
    (
        "client-cidr-integer",
        {"access.client_cidrs": [5]},
        r"^access\.client_cidrs\[0\]: 5 — not an IPv4 CIDR; write one such as 10\.0\.0\.0/8$",
    ),
    (
        "duplicate-client-cidr",
        {"access.client_cidrs": ["192.0.2.0/24", "10.0.0.0/8", "192.0.2.0/24"]},
        r"^access\.client_cidrs\[2\]: 192\.0\.2\.0/24 — duplicate of access\.client_cidrs\[0\]; list each entry once$",
    ),
    (
        "duplicate-admin-cidr",
        {"access.admin_cidrs": ["198.51.100.0/24", "198.51.100.0/24"]},
        r"^access\.admin_cidrs\[1\]: 198\.51\.100\.0/24 — duplicate of access\.admin_cidrs\[0\]",
    ),
    (
        "duplicate-extra-group",
        {"nodes.extra_security_groups": ["cni", "cni"]},
        r"^nodes\.extra_security_groups\[1\]: cni — duplicate of nodes\.extra_security_groups\[0\]",
    ),
    (
        "members-not-a-list",
        {M: "demo-cp-1"},
        r"^nodes\.members: 'demo-cp-1' — must be a list \(- item lines, or \[a, b\]\)$",
    ),
    (
        "vip-not-a-mapping",
        {"vip": "192.0.2.10"},
        r"^vip: '192\.0\.2\.10' — must be a mapping with the keys address, floating_ip_pool, virtual_router_id$",
    ),
    ("port-quoted", {"ports.frontend": "9443"}, r"^ports\.frontend: '9443' — must be a whole number, unquoted$"),
    ("count-fraction", {"nodes.count": 3.5}, r"^nodes\.count: 3\.5 — must be a whole number, unquoted$"),
    ("image-empty", {"nodes.image": ""}, r"^nodes\.image: '' — must not be empty$"),
    ("image-a-number", {"nodes.image": 2404}, r"^nodes\.image: 2404 — must be text \(quote it"),
    (
        "flavor-template",
        {"nodes.flavor": "m1.${var.size}"},
        r"^nodes\.flavor: 'm1\.\$\{var\.size\}' — must not contain "
        r"'\$\{' or '%\{': Terraform would read it as a template$",
    ),
    (
        "state-typo",
        {"state": {**S3, "encrpyt": True}},
        r"^state\.encrpyt: unknown key — allowed keys here: backend, bucket, key, region, endpoint, use_path_style, "
        r"encrypt, use_lockfile, allow_insecure_endpoint",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_rejects_bad_config_with_one_line_naming_field_value_and_rule(changes, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(with_changes(example_data(), changes))
    assert len(err.value.problems) == 1, err.value.problems
    assert re.search(expected, err.value.problems[0]), err.value.problems[0]


def test_table_holds_at_least_thirty_distinct_cases():
    assert len({c[0] for c in REJECTED}) == len(REJECTED) >= 30


def test_every_problem_is_reported_at_once():
    changes = {"vip.address": "198.51.100.10", "ports.frontend": 6443, f"{M}.2.name": "demo-cp-1"}
    with pytest.raises(ConfigError) as err:
        parse_config(with_changes(example_data(), changes))
    assert len(err.value.problems) == 3


def test_password_value_never_appears_in_the_message():
    with pytest.raises(ConfigError) as err:
        parse_config(with_changes(example_data(), {"vip.auth_pass": "hunter2hunter2"}))
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("count", ALLOWED_NODE_COUNTS)
def test_accepts_every_allowed_node_count_with_allocated_addresses(count):
    cfg = parse_config(with_changes(example_data(), {"nodes.count": count, M: DELETE}))
    assert [n.name for n in make_plan(cfg).nodes] == [f"demo-cp-{i}" for i in range(1, count + 1)]


def test_accepts_image_digest():
    digest = "haproxy:2.8.16@sha256:" + "a" * 64
    assert parse_config(with_changes(example_data(), {"containers.haproxy": digest})).containers.haproxy == digest


def test_vrid_is_derived_from_the_name_and_stable():
    a = parse_config(example_data())
    b = parse_config(example_data())
    other = parse_config(with_changes(example_data(), {"name": "prod"}))
    vrid_a, vrid_b, vrid_other = (make_plan(c).vrid for c in (a, b, other))
    assert 1 <= vrid_a <= 255
    assert vrid_a == vrid_b
    assert vrid_a != vrid_other


def test_config_is_frozen():
    cfg = parse_config(example_data())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.name = "other"


# --- Files ------------------------------------------------------------------------------------


def _write(tmp_path, text, name="cluster.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_rejects_empty_file(tmp_path):
    with pytest.raises(ConfigError, match="the file is empty; start from config/example.yaml"):
        load_config(_write(tmp_path, ""))


def test_rejects_yaml_that_does_not_parse_and_says_where(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "name: demo\nvip:\n  address: [192.0.2.10\n"))
    assert re.match(r"YAML does not parse at line \d+, column \d+: ", err.value.problems[0])


def test_rejects_a_list_at_top_level(tmp_path):
    with pytest.raises(ConfigError, match=r"\(top level\): list — the file must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_rejects_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"CONFIG: '.*nope\.yaml' — no such file"):
        load_configs(str(tmp_path / "nope.yaml"))


def test_two_clusters_on_one_network_must_not_share_a_vrid(tmp_path):
    data = example_data()
    a = _write(tmp_path, yaml.safe_dump(with_changes(data, {"vip.virtual_router_id": 42})), "a.yaml")
    b = _write(
        tmp_path,
        yaml.safe_dump(with_changes(data, {"name": "prod", "vip.virtual_router_id": 42, **OTHER_ADDRESSES})),
        "b.yaml",
    )
    with pytest.raises(ConfigError) as err:
        load_configs(f"{a},{b}")
    assert err.value.problems == [
        "vip.virtual_router_id: 42 — cluster prod and cluster demo share network demo-net and this VRID; "
        "set a distinct vip.virtual_router_id (1-255) on one of them"
    ]


def test_two_clusters_on_different_networks_may_share_a_vrid(tmp_path):
    data = example_data()
    a = _write(tmp_path, yaml.safe_dump(with_changes(data, {"vip.virtual_router_id": 42})), "a.yaml")
    b = _write(
        tmp_path,
        yaml.safe_dump(with_changes(data, {"name": "prod", "network.name": "prod-net", "vip.virtual_router_id": 42})),
        "b.yaml",
    )
    assert [c.name for c in load_configs(f"{a},{b}")] == ["demo", "prod"]


# A second cluster on demo-net with addresses of its own.
OTHER_ADDRESSES = {"vip.address": "192.0.2.20", **{f"{M}.{i}.address": f"192.0.2.{21 + i}" for i in range(3)}}


def _second_cluster(tmp_path, changes):
    data = example_data()
    a = _write(tmp_path, yaml.safe_dump(data), "a.yaml")
    b = _write(tmp_path, yaml.safe_dump(with_changes(data, {"name": "prod", **OTHER_ADDRESSES, **changes})), "b.yaml")
    return f"{a},{b}"


def test_two_clusters_on_one_network_with_addresses_of_their_own_synthesize_together(tmp_path):
    assert [c.name for c in load_configs(_second_cluster(tmp_path, {}))] == ["demo", "prod"]


def test_two_clusters_on_one_network_must_not_share_the_vip(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_configs(_second_cluster(tmp_path, {"vip.address": "192.0.2.10"}))
    assert err.value.problems == [
        "vip.address: 192.0.2.10 — cluster prod and cluster demo (vip.address) both use this address on network "
        "demo-net; each address belongs to one cluster"
    ]


def test_two_clusters_on_one_network_must_not_share_a_member_address(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_configs(_second_cluster(tmp_path, {f"{M}.2.address": "192.0.2.11"}))
    assert err.value.problems == [
        "nodes.members[2].address: 192.0.2.11 — cluster prod and cluster demo (nodes.members[0].address) both use "
        "this address on network demo-net; each address belongs to one cluster"
    ]


def test_one_clusters_node_must_not_take_another_clusters_vip(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"nodes\.members\[0\]\.address: 192\.0\.2\.10 — cluster prod and cluster demo \(vip\.address\)",
    ):
        load_configs(_second_cluster(tmp_path, {f"{M}.0.address": "192.0.2.10"}))


def test_the_same_addresses_on_two_networks_are_no_collision(tmp_path):
    data = example_data()
    a = _write(tmp_path, yaml.safe_dump(data), "a.yaml")
    b = _write(tmp_path, yaml.safe_dump(with_changes(data, {"name": "prod", "network.name": "prod-net"})), "b.yaml")
    assert len(load_configs(f"{a},{b}")) == 2


def test_a_duplicated_key_is_refused_with_its_line(tmp_path):
    text = EXAMPLE.read_text() + "vip:\n  address: 192.0.2.99\n"
    first = next(i for i, line in enumerate(EXAMPLE.read_text().splitlines(), 1) if line.startswith("vip:"))
    last = len(text.splitlines()) - 1
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert err.value.problems == [
        f"line {last}: key 'vip' repeats the one at line {first} of the same mapping — "
        "YAML would silently keep only the last; give each key once"
    ]


def test_a_duplicated_nested_key_is_refused_too(tmp_path):
    text = EXAMPLE.read_text().replace("  count: 3\n", "  count: 3\n  count: 5\n")
    with pytest.raises(
        ConfigError, match=r"^invalid config .*:\n  - line \d+: key 'count' repeats the one at line \d+"
    ):
        load_config(_write(tmp_path, text))


def test_the_same_key_in_two_mappings_is_no_duplicate(tmp_path):
    """Negative control: `name` in the cluster, the network and each member is allowed."""
    assert load_config(_write(tmp_path, EXAMPLE.read_text())).name == "demo"


def test_a_32_character_name_is_accepted_with_members_and_27_without():
    assert parse_config(with_changes(example_data(), {"name": "a" * 32})).name == "a" * 32
    cfg = parse_config(with_changes(example_data(), {"name": "a" * 27, M: DELETE}))
    assert [len(n.name) for n in make_plan(cfg).nodes] == [32, 32, 32]


def test_allow_destroy_is_off_unless_the_config_says_true():
    assert parse_config(example_data()).allow_destroy is False
    assert parse_config(with_changes(example_data(), {"allow_destroy": True})).allow_destroy is True


def test_two_configs_may_not_name_the_same_cluster(tmp_path):
    a = _write(tmp_path, EXAMPLE.read_text(), "a.yaml")
    with pytest.raises(ConfigError, match="name: demo — two configs name the same cluster"):
        load_configs(f"{a},{EXAMPLE}")


def test_problems_of_several_files_name_their_file(tmp_path):
    bad = _write(tmp_path, yaml.safe_dump(with_changes(example_data(), {"name": "prod", "ports.frontend": 6443})))
    with pytest.raises(ConfigError) as err:
        load_configs(f"{EXAMPLE},{bad}")
    assert err.value.problems == [
        f"{bad}: ports.frontend: 6443 — must differ from ports.apiserver (6443): "
        "haproxy and kube-apiserver share each node"
    ]


# --- Terraform state --------------------------------------------------------------------------


def test_state_is_local_unless_the_config_says_otherwise():
    assert parse_config(example_data()).state.backend == "local"


def test_s3_state_defaults_to_a_key_per_cluster_encrypted_and_locked():
    cfg = parse_config(with_changes(example_data(), {"state": S3}))
    assert (cfg.state_key, cfg.state.encrypt, cfg.state.use_lockfile) == ("demo/terraform.tfstate", True, True)


def test_plain_http_endpoint_is_accepted_only_when_the_config_says_so():
    cfg = parse_config(
        with_changes(
            example_data(), {"state": {**S3, "endpoint": "http://object.example.org", "allow_insecure_endpoint": True}}
        )
    )
    assert cfg.state.endpoint == "http://object.example.org"


@pytest.mark.parametrize(
    "state",
    [{**S3, "secret_key": "hunter2hunter2"}, {**S3, "endpoint": "https://ec2key:hunter2hunter2@object.example.org"}],
)
def test_state_secret_value_never_appears_in_the_message(state):
    with pytest.raises(ConfigError) as err:
        parse_config(with_changes(example_data(), {"state": state}))
    assert "hunter2" not in str(err.value)


def _with_state(tmp_path, name, cluster, state):
    # Each cluster on its own network: these tests are about the state object alone.
    changes = {"name": cluster, "network.name": f"{cluster}-net", "vip.virtual_router_id": None, "state": state}
    return _write(tmp_path, yaml.safe_dump(with_changes(example_data(), changes)), name)


def test_two_clusters_must_not_share_one_state_object(tmp_path):
    a = _with_state(tmp_path, "a.yaml", "demo", {**S3, "key": "k8s/terraform.tfstate"})
    b = _with_state(
        tmp_path, "b.yaml", "prod", {**S3, "key": "k8s/terraform.tfstate", "endpoint": "https://object.example.org/"}
    )
    with pytest.raises(ConfigError) as err:
        load_configs(f"{a},{b}")
    assert err.value.problems == [
        "state.key: k8s/terraform.tfstate — cluster prod and cluster demo would share this state object "
        "in bucket kha-state; give each cluster its own state.key"
    ]


def test_two_clusters_may_share_a_bucket_with_the_default_keys(tmp_path):
    a = _with_state(tmp_path, "a.yaml", "demo", S3)
    b = _with_state(tmp_path, "b.yaml", "prod", S3)
    assert [c.state_key for c in load_configs(f"{a},{b}")] == ["demo/terraform.tfstate", "prod/terraform.tfstate"]


def test_one_key_in_buckets_of_two_stores_is_no_collision(tmp_path):
    a = _with_state(tmp_path, "a.yaml", "demo", {**S3, "key": "k8s/terraform.tfstate"})
    b = _with_state(
        tmp_path, "b.yaml", "prod", {**S3, "key": "k8s/terraform.tfstate", "endpoint": "https://s3.other.example.org"}
    )
    assert len(load_configs(f"{a},{b}")) == 2


def test_a_field_error_does_not_hide_the_cross_field_problems_of_the_same_file():
    changes = {"nodes.count": 4, "vip.address": "10.0.0.1", "ports.health": 9443}
    with pytest.raises(ConfigError) as err:
        parse_config(with_changes(example_data(), changes))
    assert [p.split(":")[0] for p in err.value.problems] == ["nodes.count", "vip.address", "ports.health"]
    # The negative control: alone, the count is the only problem (nothing is made up about the rest).
    with pytest.raises(ConfigError) as err:
        parse_config(with_changes(example_data(), {"nodes.count": 4}))
    assert [p.split(":")[0] for p in err.value.problems] == ["nodes.count"]


def test_a_cross_field_problem_about_a_field_in_error_is_left_out():
    """With nodes.count in error, a members-count problem would speak of the default, not the file."""
    data = with_changes(example_data(), {"nodes.count": 4})
    data["nodes"]["members"].append({"name": "demo-cp-4", "address": "192.0.2.14"})
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert [p.split(":")[0] for p in err.value.problems] == ["nodes.count"]
