"""The real control plane on the loopback cloud's nodes: `make cloud CONTROL_PLANE=kubeadm`, `cdktf
deploy` of the example, then kubeadm over SSH from the admin namespace as the README has an operator
run it (init on the node whose kubeadm.yaml is the InitConfiguration, join.sh on the others), and
kubectl through the VIP from the client namespace.

Its own cloud (the deploy package's runs the stand-in apiserver), after that one has stopped: one
cloud on the machine runs servers at a time.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from cloud import handle, paths, playground
from cluster.plan import KUBEADM_CONFIG, KUBEADM_JOIN
from lab.world.kubeadm import INIT_SKIPS, JOIN_SKIPS, join_secrets
from tests.conftest import ROOT, example_data
from tests.kubeadm import require_tool

pytestmark = [pytest.mark.cloud, pytest.mark.lab]

TOOLS = ROOT / ".tools" / "bin"
NODE_PATH = f"{TOOLS}:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def kubeadm_cloud():
    require_tool("kubeadm")  # skips naming `make setup`; fails under CI, where the set-up built it
    reason = handle.missing()
    if reason:
        pytest.skip(reason)
    cloud = handle.start([str(paths.PYTHON), "-m", "cloud", "--control-plane", "kubeadm"])
    try:
        reach = playground.Reach.read()
        if reach.client_netns is None:
            pytest.skip(cloud.servers_not_running)
        yield cloud, reach
    finally:
        handle.stop(cloud)


def test_kubeadm_over_ssh_sets_up_the_control_plane_and_kubectl_works_through_the_vip(kubeadm_cloud, tmp_path):
    cloud, reach = kubeadm_cloud
    project = playground.project_copy(tmp_path / "project")
    config = example_data()
    since = len(playground.hypervisor_log(cloud.run_folder))
    playground.cdktf(project, "demo", config, "deploy")
    try:
        outputs = playground.outputs(project / "cdktf.out" / "stacks" / config["name"])
        addresses = outputs["node_addresses"]
        playground.wait_booted(cloud.run_folder, list(addresses), since)
        init = next(
            name
            for name, address in addresses.items()
            if playground.ssh(reach, address, f"sudo grep -q 'kind: InitConfiguration' {KUBEADM_CONFIG}").returncode
            == 0
        )
        init_cmd = f"kubeadm init --config {KUBEADM_CONFIG} --upload-certs --skip-phases={','.join(INIT_SKIPS)}"
        done = playground.ssh(reach, addresses[init], f"sudo env PATH={NODE_PATH} {init_cmd}", timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        secrets = join_secrets(done.stdout + done.stderr)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in secrets.environment().items())
        for name, address in addresses.items():
            if name == init:
                continue
            join = f"sudo env PATH={NODE_PATH} {env} sh {KUBEADM_JOIN} --skip-phases={','.join(JOIN_SKIPS)}"
            done = playground.ssh(reach, address, join, timeout=600)
            assert done.returncode == 0, f"{name}: " + done.stdout[-2000:] + done.stderr[-2000:]
        conf = playground.ssh(reach, addresses[init], "sudo cat /etc/kubernetes/admin.conf")
        kubeconfig = tmp_path / "admin.conf"
        kubeconfig.write_text(conf.stdout)
        kubectl = [str(TOOLS / "kubectl"), "--kubeconfig", str(kubeconfig)]
        assert f"server: https://{outputs['control_plane_endpoint']}" in conf.stdout
        got = subprocess.run(
            playground.in_ns(reach.client_netns, [*kubectl, "get", "--raw", "/readyz"]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert got.stdout.strip() == "ok", got.stderr
        pods = subprocess.run(
            playground.in_ns(reach.client_netns, [*kubectl, "get", "namespaces", "-o", "name"]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "namespace/kube-system" in pods.stdout.split(), pods.stderr
        # The negative control: the same kubeconfig from the admin namespace, outside client_cidrs.
        refused = subprocess.run(
            playground.in_ns(reach.admin_netns, [*kubectl, "get", "--raw", "/readyz", "--request-timeout=5s"]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0
    finally:
        playground.cdktf(project, "demo", {**config, "allow_destroy": True}, "destroy")
