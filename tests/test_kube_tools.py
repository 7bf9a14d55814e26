"""The Kubernetes tools `make setup` builds (kube/README.md): the versions cluster/kubernetes.py pins,
in the wrapper modules' go.mod and in what the binaries print.

A version lives in three places: the pin, kube/k8s/go.mod (kubernetes and its staging twins) and
kube/etcd/go.mod. The go.mod checks below hold the two modules to the pin, so that moving one
without the others fails here rather than in a build.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from cluster.kubernetes import ETCD_VERSION, KUBERNETES_VERSION
from tests.conftest import ROOT
from tests.kubeadm import require_tool

KUBE_GO_MOD = ROOT / "kube" / "k8s" / "go.mod"
ETCD_GO_MOD = ROOT / "kube" / "etcd" / "go.mod"
# The siblings etcd's server module replaces with `../` paths in its own go.mod.
ETCD_SIBLINGS = ("api", "client/pkg", "client", "pkg")


def read_go_mod(text: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """go.mod's requirements (path → version) and replacements (path → (new path, version))."""
    requires: dict[str, str] = {}
    replaces: dict[str, tuple[str, str]] = {}
    block = None
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if line == ")":
            block = None
            continue
        verb, _, rest = line.partition(" ")
        if verb in ("require", "replace"):
            if rest.strip() == "(":
                block = verb
                continue
        elif block:
            verb, rest = block, line
        else:
            continue
        if verb == "require":
            path, version = rest.split()
            requires[path] = version
        else:
            old, new = (side.split() for side in rest.split("=>"))
            replaces[old[0]] = (new[0], new[1] if len(new) > 1 else "")
    return requires, replaces


def kube_go_mod_problems(text: str, kubernetes: str = KUBERNETES_VERSION) -> list[str]:
    """Where kube/k8s/go.mod departs from Kubernetes `kubernetes` and its staging modules v0.<minor>.<patch>."""
    requires, replaces = read_go_mod(text)
    staging = "v0." + kubernetes.split(".", 1)[1]
    found = []
    if requires.get("k8s.io/kubernetes") != f"v{kubernetes}":
        got = requires.get("k8s.io/kubernetes", "nothing")
        found.append(f"k8s.io/kubernetes: go.mod requires {got}, cluster/kubernetes.py pins v{kubernetes}")
    if "k8s.io/client-go" not in replaces:
        found.append("k8s.io/client-go: not replaced; every staging module needs its published twin")
    for old, (new, version) in sorted(replaces.items()):
        if old.startswith("k8s.io/") and (new, version) != (old, staging):
            found.append(f"{old}: replaced by {new} {version}, expected {old} {staging}")
    for path, version in sorted(requires.items()):
        if path in replaces and version not in ("v0.0.0", staging):
            found.append(f"{path}: go.mod requires {version}, the staging modules of v{kubernetes} are {staging}")
        if version == "v0.0.0" and path not in replaces:
            found.append(f"{path}: required at v0.0.0 (a staging placeholder) but not replaced")
    return found


def etcd_go_mod_problems(text: str, etcd: str = ETCD_VERSION) -> list[str]:
    """Where kube/etcd/go.mod departs from etcd `etcd` (the server and its sibling modules together)."""
    requires, replaces = read_go_mod(text)
    found = []
    if requires.get("go.etcd.io/etcd/server/v3") != f"v{etcd}":
        got = requires.get("go.etcd.io/etcd/server/v3", "nothing")
        found.append(f"go.etcd.io/etcd/server/v3: go.mod requires {got}, cluster/kubernetes.py pins v{etcd}")
    for module in (f"go.etcd.io/etcd/{name}/v3" for name in ETCD_SIBLINGS):
        if requires.get(module, f"v{etcd}") != f"v{etcd}":
            found.append(f"{module}: go.mod requires {requires[module]}, etcd's modules move together at v{etcd}")
        if module in replaces and replaces[module] != (module, f"v{etcd}"):
            new, version = replaces[module]
            found.append(f"{module}: replaced by {new} {version}, expected {module} v{etcd}")
    return found


def test_kube_go_mod_builds_the_pinned_kubernetes_with_its_staging_twins():
    assert kube_go_mod_problems(KUBE_GO_MOD.read_text()) == []


def test_etcd_go_mod_builds_the_pinned_etcd():
    assert etcd_go_mod_problems(ETCD_GO_MOD.read_text()) == []


def test_kube_go_mod_check_refuses_another_kubernetes_release():
    text = KUBE_GO_MOD.read_text().replace(f"k8s.io/kubernetes v{KUBERNETES_VERSION}", "k8s.io/kubernetes v1.36.4")
    assert kube_go_mod_problems(text) == [
        f"k8s.io/kubernetes: go.mod requires v1.36.4, cluster/kubernetes.py pins v{KUBERNETES_VERSION}"
    ]


def test_kube_go_mod_check_refuses_a_staging_twin_of_another_release():
    staging = "v0." + KUBERNETES_VERSION.split(".", 1)[1]
    text = KUBE_GO_MOD.read_text().replace(f"k8s.io/api => k8s.io/api {staging}", "k8s.io/api => k8s.io/api v0.36.4")
    assert kube_go_mod_problems(text) == [f"k8s.io/api: replaced by k8s.io/api v0.36.4, expected k8s.io/api {staging}"]


def test_kube_go_mod_check_refuses_a_staging_placeholder_left_unreplaced():
    text = re.sub(r"\n\tk8s.io/kubectl => .*", "", KUBE_GO_MOD.read_text())
    assert kube_go_mod_problems(text) == ["k8s.io/kubectl: required at v0.0.0 (a staging placeholder) but not replaced"]


def test_etcd_go_mod_check_refuses_another_etcd_release():
    text = ETCD_GO_MOD.read_text().replace(
        f"go.etcd.io/etcd/server/v3 v{ETCD_VERSION}", "go.etcd.io/etcd/server/v3 v3.6.13"
    )
    assert etcd_go_mod_problems(text) == [
        f"go.etcd.io/etcd/server/v3: go.mod requires v3.6.13, cluster/kubernetes.py pins v{ETCD_VERSION}"
    ]


def test_etcd_go_mod_check_refuses_a_sibling_replaced_by_another_release():
    text = ETCD_GO_MOD.read_text() + "\nreplace go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.6.13\n"
    api = "go.etcd.io/etcd/api/v3"
    assert etcd_go_mod_problems(text) == [f"{api}: replaced by {api} v3.6.13, expected {api} v{ETCD_VERSION}"]


def _run(binary: Path, *args: str) -> str:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kubectl_prints_the_pinned_kubernetes_version():
    kubectl = require_tool("kubectl")
    version = json.loads(_run(kubectl, "version", "--client", "-o", "json"))["clientVersion"]
    assert (version["gitVersion"], version["major"], version["minor"]) == (
        f"v{KUBERNETES_VERSION}",
        *KUBERNETES_VERSION.split(".")[:2],
    )
    assert version["gitTreeState"] == "clean"


def test_kube_apiserver_kube_controller_manager_and_kubeadm_print_the_pinned_kubernetes_version():
    for server in ("kube-apiserver", "kube-controller-manager"):
        assert _run(require_tool(server), "--version").strip() == f"Kubernetes v{KUBERNETES_VERSION}"
    assert _run(require_tool("kubeadm"), "version", "-o", "short").strip() == f"v{KUBERNETES_VERSION}"


def test_etcd_prints_the_pinned_etcd_version():
    etcd = require_tool("etcd")
    assert _run(etcd, "--version").splitlines()[0] == f"etcd Version: {ETCD_VERSION}"


def test_tools_bin_links_each_tool_to_its_build_for_the_pinned_version():
    names = ("kube-apiserver", "kube-controller-manager", "kubeadm", "kubectl", "kha-probe", "etcd")
    tools = {name: require_tool(name) for name in names}
    kube, etcd = ROOT / ".tools" / "kube" / f"v{KUBERNETES_VERSION}", ROOT / ".tools" / "etcd" / f"v{ETCD_VERSION}"
    assert {name: path.resolve() for name, path in tools.items()} == {
        name: (etcd if name == "etcd" else kube).resolve() / "bin" / name for name in tools
    }
