"""Each node's kubeadm configuration: what the config may say, what the file says, that kubeadm
itself accepts it, and how a joining node's secrets reach kubeadm without touching user_data."""

from __future__ import annotations

import re
import stat
import subprocess

import pytest
import yaml

from cluster import kubernetes as kube
from cluster.config import ConfigError, parse_config
from cluster.plan import AUTHENTICATION_CONFIG, JOIN_SECRETS, KUBEADM_CONFIG, KUBEADM_JOIN, make_plan, shutdown_delay_s
from tests.conftest import DELETE, config_from, example_data, with_changes
from tests.kubeadm import EXAMPLE_SECRETS, kubeadm_validate, require_tool, with_join_secrets
from userdata.cloudconfig import written_files
from userdata.render import kubeadm_files, render_join_script, render_kubeadm_config
from userdata.stack import SynthesizedStack


def documents(text: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def addresses_for(plan) -> dict[str, str]:
    """Addresses as Neutron might allocate them, for configs without members."""
    return {n.name: n.address or f"192.0.2.{101 + i}" for i, n in enumerate(plan.nodes)}


# --- what the file says --------------------------------------------------------------------------


def test_the_first_node_inits_with_the_vip_as_endpoint_and_every_address_in_the_certificate(example_config):
    plan = make_plan(config_from({"vip.floating_ip_pool": "public"}))
    docs = documents(render_kubeadm_config(plan, "demo-cp-1", floating_ip="203.0.113.7"))
    assert set(docs) == {"InitConfiguration", "ClusterConfiguration"}
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["apiVersion"] == cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["localAPIEndpoint"] == {"advertiseAddress": "192.0.2.11", "bindPort": 6443}
    assert init["nodeRegistration"]["name"] == "demo-cp-1"
    assert cluster["controlPlaneEndpoint"] == "192.0.2.10:9443"
    assert cluster["kubernetesVersion"] == f"v{kube.KUBERNETES_VERSION}"
    assert cluster["apiServer"]["certSANs"] == ["192.0.2.10", "203.0.113.7", "192.0.2.11", "192.0.2.12", "192.0.2.13"]
    assert {"name": "shutdown-delay-duration", "value": f"{shutdown_delay_s()}s"} in cluster["apiServer"]["extraArgs"]
    assert cluster["networking"] == {
        "podSubnet": "10.244.0.0/16",
        "serviceSubnet": "10.96.0.0/12",
        "dnsDomain": "cluster.local",
    }


def test_the_other_nodes_join_with_their_own_endpoint_and_no_secret_in_the_file(example_plan):
    for node in ("demo-cp-2", "demo-cp-3"):
        docs = documents(render_kubeadm_config(example_plan, node))
        assert set(docs) == {"JoinConfiguration"}
        join = docs["JoinConfiguration"]
        address = example_plan.node(node).address
        assert join["controlPlane"]["localAPIEndpoint"] == {"advertiseAddress": address, "bindPort": 6443}
        assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "192.0.2.10:9443"
        assert join["discovery"]["bootstrapToken"]["token"] == JOIN_SECRETS["token"][0]
        assert join["discovery"]["bootstrapToken"]["caCertHashes"] == [JOIN_SECRETS["caCertHash"][0]]
        assert join["controlPlane"]["certificateKey"] == JOIN_SECRETS["certificateKey"][0]


def test_ports_come_from_the_config():
    plan = make_plan(config_from({"ports.frontend": 8443, "ports.apiserver": 7443}))
    cluster = documents(render_kubeadm_config(plan, "demo-cp-1"))["ClusterConfiguration"]
    assert cluster["controlPlaneEndpoint"] == "192.0.2.10:8443"
    join = documents(render_kubeadm_config(plan, "demo-cp-2"))["JoinConfiguration"]
    assert join["controlPlane"]["localAPIEndpoint"]["bindPort"] == 7443


def test_the_users_apiserver_args_go_to_extra_args_and_may_override_the_shutdown_delay():
    plan = make_plan(
        config_from({"kubernetes": {"apiserver_args": {"shutdown-delay-duration": "9s", "audit-log-maxage": "7"}}})
    )
    args = documents(render_kubeadm_config(plan, "demo-cp-1"))["ClusterConfiguration"]["apiServer"]["extraArgs"]
    assert args == [{"name": "audit-log-maxage", "value": "7"}, {"name": "shutdown-delay-duration", "value": "9s"}]


def test_a_hardened_apiserver_gets_an_authentication_config_instead_of_the_anonymous_auth_flag():
    plan = make_plan(config_from({"kubernetes": {"apiserver_args": {"anonymous-auth": "false"}}}))
    cluster = documents(render_kubeadm_config(plan, "demo-cp-1"))["ClusterConfiguration"]
    names = {a["name"]: a["value"] for a in cluster["apiServer"]["extraArgs"]}
    assert "anonymous-auth" not in names and names["authentication-config"] == AUTHENTICATION_CONFIG
    (volume,) = cluster["apiServer"]["extraVolumes"]
    assert AUTHENTICATION_CONFIG.startswith(volume["mountPath"] + "/") and volume["readOnly"] is True
    files = {f["host_path"]: f["content"] for f in kubeadm_files(plan, "demo-cp-2")}
    authn = yaml.safe_load(files[AUTHENTICATION_CONFIG])
    assert authn["kind"] == "AuthenticationConfiguration"
    assert authn["anonymous"] == {
        "enabled": True,
        "conditions": [{"path": p} for p in ("/healthz", "/livez", "/readyz")],
    }
    # and without the flag, no such file
    assert AUTHENTICATION_CONFIG not in {f["host_path"] for f in kubeadm_files(make_plan(config_from()), "demo-cp-2")}


def test_user_data_carries_no_join_secret(example_json):
    for inst in SynthesizedStack(example_json).instances:
        files = written_files(inst.user_data)
        assert KUBEADM_CONFIG in files
        text = inst.user_data
        assert not re.search(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b", text), "a bootstrap token in user_data"
        assert not re.search(r"sha256:[0-9a-f]{64}|\b[0-9a-f]{64}\b", text), "a hash or key in user_data"
        assert (KUBEADM_JOIN in files) == (inst.name != "demo-cp-1")


# --- bad input -----------------------------------------------------------------------------------

REJECTED = [
    (
        "old-minor",
        {"kubernetes.version": "1.36.3"},
        r"^kubernetes\.version: '1\.36\.3' — Kubernetes 1\.36 is not supported; allowed: v1\.37\.0 to v1\.37\.2",
    ),
    (
        "unknown-patch",
        {"kubernetes.version": "v1.37.9"},
        r"^kubernetes\.version: 'v1\.37\.9' — v1\.37\.9 is not a release this project knows; allowed",
    ),
    (
        "not-a-version",
        {"kubernetes.version": "latest"},
        r"^kubernetes\.version: 'latest' — not a Kubernetes version such as v1\.37\.2",
    ),
    (
        "unknown-flag",
        {"kubernetes.apiserver_args": {"anonymus-auth": "false"}},
        r"^kubernetes\.apiserver_args\.anonymus-auth: 'false' — not a flag of kube-apiserver v1\.37\.2; "
        r"did you mean anonymous-auth\?$",
    ),
    (
        "dashes",
        {"kubernetes.apiserver_args": {"--audit-log-maxage": "7"}},
        r"^kubernetes\.apiserver_args\.--audit-log-maxage: '7' — write the flag without its leading dashes: "
        r"audit-log-maxage$",
    ),
    (
        "not-a-string",
        {"kubernetes.apiserver_args": {"audit-log-maxage": 7}},
        r"^kubernetes\.apiserver_args\.audit-log-maxage: 7 — must be text \(quote it",
    ),
    (
        "owned-flag",
        {"kubernetes.apiserver_args": {"secure-port": "7443"}},
        r"^kubernetes\.apiserver_args\.secure-port: '7443' — set ports\.apiserver instead",
    ),
    (
        "anonymous-value",
        {"kubernetes.apiserver_args": {"anonymous-auth": "no"}},
        r"^kubernetes\.apiserver_args\.anonymous-auth: 'no' — allowed: \"true\" or \"false\"$",
    ),
    (
        "both-authn",
        {"kubernetes.apiserver_args": {"anonymous-auth": "false", "authentication-config": "/a.yaml"}},
        r"^kubernetes\.apiserver_args: anonymous-auth and authentication-config — kube-apiserver refuses "
        r"anonymous-auth beside authentication-config",
    ),
    (
        "pods-in-tenant",
        {"kubernetes.pod_subnet": "192.0.2.0/25"},
        r"^kubernetes\.pod_subnet: 192\.0\.2\.0/25 — overlaps network\.subnet\.cidr 192\.0\.2\.0/24",
    ),
    (
        "services-in-tenant",
        {"kubernetes.service_subnet": "192.0.0.0/16"},
        r"^kubernetes\.service_subnet: 192\.0\.0\.0/16 — overlaps network\.subnet\.cidr 192\.0\.2\.0/24",
    ),
    (
        "pods-in-services",
        {"kubernetes.pod_subnet": "10.100.0.0/16"},
        r"^kubernetes\.pod_subnet: 10\.100\.0\.0/16 — overlaps kubernetes\.service_subnet 10\.96\.0\.0/12",
    ),
    (
        "unknown-key",
        {"kubernetes.cni": "calico"},
        r"^kubernetes\.cni: unknown key — allowed keys here: version, pod_subnet, service_subnet, dns_domain, "
        r"apiserver_args$",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_a_bad_kubernetes_section_is_one_line_naming_field_value_and_rule(changes, expected):
    data = example_data()
    data.setdefault("kubernetes", {})
    with pytest.raises(ConfigError) as err:
        parse_config(with_changes(data, changes))
    assert len(err.value.problems) == 1, err.value.problems
    assert re.search(expected, err.value.problems[0]), err.value.problems[0]


def test_the_version_is_written_as_kubeadm_writes_it():
    assert make_plan(config_from({"kubernetes.version": "1.37.1"})).kubernetes.version == "v1.37.1"
    assert make_plan(config_from({"kubernetes": DELETE})).kubernetes.version == f"v{kube.KUBERNETES_VERSION}"


# --- kubeadm itself ------------------------------------------------------------------------------

VARIANTS = {
    "example": {},
    "five-nodes-no-members": {"nodes.count": 5, "nodes.members": DELETE},
    "seven-nodes-no-members": {"nodes.count": 7, "nodes.members": DELETE},
    "floating-ip": {"vip.floating_ip_pool": "public"},
    "other-ports": {"ports.frontend": 8443, "ports.apiserver": 7443},
    "hardened": {"kubernetes.apiserver_args": {"anonymous-auth": "false", "audit-log-maxage": "30"}},
}


@pytest.mark.parametrize("name", VARIANTS)
def test_kubeadm_validates_every_nodes_file(name):
    plan = make_plan(config_from(VARIANTS[name]))
    fip = "203.0.113.7" if "floating_ip_pool" in str(VARIANTS[name]) else None
    for node in plan.nodes:
        text = render_kubeadm_config(plan, node.name, addresses_for(plan), fip)
        done = kubeadm_validate(text)
        assert done.returncode == 0, f"{node.name}: {done.stdout}{done.stderr}\n{text}"
        assert "ok" in done.stdout.lower() or "ok" in done.stderr.lower()


def test_kubeadm_refuses_a_joining_file_whose_secrets_were_not_filled_in(example_plan):
    """The negative control: the validation above can fail, and the placeholders are not kubeadm's forms."""
    done = kubeadm_validate(render_kubeadm_config(example_plan, "demo-cp-2"), fill_secrets=False)
    assert done.returncode != 0
    assert "token" in (done.stdout + done.stderr).lower()


def test_the_flag_list_is_kube_apiservers_own():
    """The list the config is checked against is what the pinned kube-apiserver lists in its --help."""
    binary = require_tool("kube-apiserver")
    done = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    listed = set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", done.stdout, re.MULTILINE))
    assert listed and listed == kube.apiserver_flags(), sorted(listed ^ kube.apiserver_flags())[:20]


# --- the join, as an operator runs it ------------------------------------------------------------


@pytest.fixture
def join_node(tmp_path, example_plan):
    """join.sh in a throw-away root: the node's kubeadm.yaml, a kubeadm that records what it is given."""
    script = render_join_script()
    config = tmp_path / "kubeadm.yaml"
    config.write_text(render_kubeadm_config(example_plan, "demo-cp-2"))
    join = tmp_path / "join.sh"
    join.write_text(script.replace(KUBEADM_CONFIG, str(config)).replace("/run/", f"{tmp_path}/"))
    join.chmod(0o700)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "kubeadm"
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncp "$3" {tmp_path}/seen.yaml\nstat -c %a "$3" > {tmp_path}/mode\n'
    )
    fake.chmod(0o755)
    return tmp_path, join, bindir


def run_join(join_node, secrets: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    tmp, join, bindir = join_node
    env = {"PATH": f"{bindir}:/usr/bin:/bin", **{JOIN_SECRETS[f][1]: v for f, v in secrets.items()}}
    return subprocess.run(["sh", str(join), *args], env=env, capture_output=True, text=True, timeout=30)


def test_join_fills_the_secrets_into_a_private_copy_and_removes_it(join_node):
    tmp = join_node[0]
    done = run_join(join_node, EXAMPLE_SECRETS, "--v=5")
    assert done.returncode == 0, done.stderr
    seen = (tmp / "seen.yaml").read_text()
    assert seen == with_join_secrets((tmp / "kubeadm.yaml").read_text())
    assert (tmp / "mode").read_text().strip() == "600"
    assert (tmp / "args").read_text().split() == ["join", "--config", (tmp / "args").read_text().split()[2], "--v=5"]
    assert not list(tmp.glob("kubeadm-join.*")), "the copy with the secrets is left behind"
    assert "@KUBEADM" in (tmp / "kubeadm.yaml").read_text(), "the node's own file must keep its placeholders"


@pytest.mark.parametrize("field", list(EXAMPLE_SECRETS))
def test_join_refuses_a_missing_or_malformed_secret_naming_its_variable(join_node, field):
    variable = JOIN_SECRETS[field][1]
    for bad in ({k: v for k, v in EXAMPLE_SECRETS.items() if k != field}, {**EXAMPLE_SECRETS, field: "x|y; rm -rf /"}):
        done = run_join(join_node, bad)
        assert done.returncode == 2
        assert done.stderr.startswith(f"{variable}: not set or not in kubeadm's form")
        assert not (join_node[0] / "args").exists(), "kubeadm ran anyway"


def test_the_join_script_is_root_only():
    files = {f["host_path"]: f for f in kubeadm_files(make_plan(config_from()), "demo-cp-2")}
    assert files[KUBEADM_JOIN]["permissions"] == "0700" and files[KUBEADM_CONFIG]["permissions"] == "0600"
    assert stat.S_IMODE(int(files[KUBEADM_JOIN]["permissions"], 8)) & 0o077 == 0
