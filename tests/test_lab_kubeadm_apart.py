"""The real control plane's labs of their own: a hardened apiserver (and its negative control) and
the soak with kha-probe. A module apart from tests/test_lab_kubeadm.py, whose shared lab (module
scope) must be torn down before these take the machine-wide lab lock."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cluster.plan import CLUSTER_INFO_PATH
from lab.scenarios import hardened, soak
from lab.world.harness import KUBEADM, Lab, synthesize
from tests.conftest import EXAMPLE, ROOT
from tests.test_lab_kubeadm import _requirements


@pytest.fixture(scope="module")
def hardened_doc(tmp_path_factory):
    _requirements()
    return hardened.hardened_doc(EXAMPLE, tmp_path_factory.mktemp("hardened"))


@pytest.mark.lab
def test_with_the_plain_anonymous_auth_flag_haproxy_marks_every_apiserver_down(hardened_doc):
    """The negative control: kube-apiserver --anonymous-auth=false answers haproxy's checks 401."""
    r = hardened.plain_flag_control(hardened_doc)
    assert r.local_readyz == "401"
    for node, view in r.views.items():
        assert view and all(a.down for a in view), f"{node}: {view}"
    first = next(iter(r.views.values()))
    assert [(a.check, a.last_check) for a in first if a.check.startswith("L7")] == [("L7STS", "Unauthorized")], first


@pytest.mark.lab
def test_a_hardened_apiserver_keeps_its_endpoint_and_refuses_anonymous_requests_elsewhere(hardened_doc):
    with Lab(hardened_doc, control_plane=KUBEADM) as lab:
        r = hardened.ours(lab)
    for node, view in r.views.items():
        assert view and not any(a.down for a in view), f"{node}: {view}"
    assert {path: r.anonymous[path] for path in ("/readyz", "/livez", "/healthz")} == dict.fromkeys(
        ("/readyz", "/livez", "/healthz"), "200"
    )
    assert (r.anonymous["/api"], r.anonymous["/version"]) == ("401", "401")
    assert r.anonymous[CLUSTER_INFO_PATH] == "200", "kubeadm join discovers the cluster anonymously"
    assert r.kubectl_readyz == "ok"


# --- the soak with the real control plane ------------------------------------------------------------


def test_the_real_control_planes_soak_invariants_fail_on_what_they_guard():
    assert soak.writes_kept([], 10).ok and not soak.writes_kept(["create probe-seq-3 (seq 3)"], 10).ok
    assert soak.watch_order([]).ok and not soak.watch_order(["raw: k went from resourceVersion 7 back to 5"]).ok
    assert soak.etcd_leader({"a": "leader", "b": "follower", "c": "follower"}).ok
    assert not soak.etcd_leader({"a": "leader", "b": "leader", "c": "follower"}).ok
    assert not soak.etcd_leader({"a": "no answer", "b": "follower", "c": "follower"}).ok


@pytest.mark.lab
def test_a_short_soak_with_the_real_control_plane_keeps_every_acknowledged_write():
    _requirements()
    argv = [sys.executable, "-m", "lab", "--json", str(synthesize()), "soak", "--control-plane", "kubeadm"]
    done = subprocess.run(
        [*argv, "--seed", "3", "--minutes", "2"], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for invariant in ("writes kept", "watch order", "etcd leader", "split brain", "availability", "leaks"):
        assert re.search(rf"^  ok   {invariant} ", done.stdout, re.MULTILINE), done.stdout[-3000:]
