"""A hardened kube-apiserver (`kubernetes.apiserver_args: {anonymous-auth: "false"}`, as CIS asks) keeps
its endpoint: haproxy's /readyz checks are anonymous.

The negative control gives kube-apiserver the plain flag, as kubeadm's users do: every check gets
401 and haproxy marks every apiserver DOWN, so the VIP serves nothing and `kubeadm init` itself
cannot reach the API through it. The product instead writes an authentication configuration that
keeps anonymous access to the health endpoints only (cluster.plan.ANONYMOUS_PATHS): the checks
pass, and everything else still refuses anonymous requests.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.plan import AUTHENTICATION_CONFIG, CLUSTER_INFO_PATH, KUBEADM_CONFIG
from lab.scenarios import realcp
from lab.world import kubeadm, topology
from lab.world.apiserver import PORT as APISERVER_PORT
from lab.world.harness import KUBEADM, TOOLS, Lab
from ops.remote import Apiserver, parse_stats
from userdata.cloudconfig import with_file_line
from userdata.stack import with_user_data

HARDENED = {"anonymous-auth": "false"}
CHECKS_SEEN_S = 60.0  # the apiserver up, then haproxy's checks of it (2 in a row decide)


def hardened_doc(config: Path, outdir: Path) -> dict:
    """The example config with anonymous-auth "false", synthesized (the product's way)."""
    return realcp.with_apiserver_args(config, outdir, HARDENED)


def plain_flag(doc: dict) -> dict:
    """The negative control: the first node's kubeadm.yaml gives kube-apiserver --anonymous-auth=false
    itself, instead of the authentication configuration."""

    def edit(inst) -> str:
        if "- name: authentication-config" not in inst.user_data:
            return inst.user_data
        text = with_file_line(inst.user_data, KUBEADM_CONFIG, "- name: authentication-config", "- name: anonymous-auth")
        return with_file_line(text, KUBEADM_CONFIG, f'value: "{AUTHENTICATION_CONFIG}"', 'value: "false"')

    return with_user_data(doc, edit)


def haproxy_view(lab: Lab, node: str) -> tuple[Apiserver, ...]:
    """haproxy's view of every apiserver on `node`, from its stats (as `ops status` reads it)."""
    return parse_stats(realcp.haproxy_stats(lab, node).splitlines())


@dataclass
class ControlResult:
    views: dict[str, tuple[Apiserver, ...]]  # each node's haproxy, once the first apiserver answered
    local_readyz: str  # what the first node's apiserver answers an anonymous /readyz, asked directly
    init_failed: bool


def plain_flag_control(doc: dict) -> ControlResult:
    """Bring the first node's apiserver up with the plain flag (kubeadm init, as usual) and read
    every haproxy's view of it; init, which needs the API through the VIP, is left to fail."""
    with Lab(plain_flag(doc), control_plane=KUBEADM, kubeadm_up=False) as lab:
        first = lab.init_node
        node = lab.nodes[first]
        assert node.kubelet is not None
        node.kubelet.start()
        failed: list[BaseException] = []

        def init() -> None:
            try:
                kubeadm.init(node.engine, TOOLS)
            except BaseException as err:  # noqa: BLE001 - expected: reported in the result
                failed.append(err)

        threading.Thread(target=init, daemon=True).start()
        readyz = ""
        deadline = time.monotonic() + CHECKS_SEEN_S
        url = f"https://{node.address}:{APISERVER_PORT}/readyz"
        while time.monotonic() < deadline:
            argv = ["curl", "-sk", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", url]
            done = node.engine.run(argv, check=False)
            readyz = done.stdout.strip()
            if readyz not in ("", "000"):
                break
            time.sleep(0.5)
        time.sleep(3.0)  # several checks' worth (inter 250 ms, fall 2)
        views = {n: haproxy_view(lab, n) for n in lab.nodes}
        return ControlResult(views, readyz, bool(failed))


@dataclass
class HardenedResult:
    views: dict[str, tuple[Apiserver, ...]]
    anonymous: dict[str, str]  # path -> HTTP status of an anonymous request through the VIP
    kubectl_readyz: str


def ours(lab: Lab) -> HardenedResult:
    """On a steady lab built from hardened_doc: haproxy's view, anonymous requests through the VIP,
    and kubectl with admin.conf."""
    lab.wait_steady()
    views = {n: haproxy_view(lab, n) for n in lab.nodes}
    anonymous = {}
    for path in ("/readyz", "/livez", "/healthz", "/api", "/version", CLUSTER_INFO_PATH):
        url = f"https://{lab.stack.vip}:{lab.frontend_port}{path}"
        argv = ["curl", "-sk", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", url]
        done = subprocess.run(topology.in_ns(topology.CLIENT_NS, argv), capture_output=True, text=True, timeout=10)
        anonymous[path] = done.stdout.strip()
    argv = [str(TOOLS / "kubectl"), "--kubeconfig", str(lab.kubeconfig), "get", "--raw", "/readyz"]
    done = subprocess.run(topology.in_ns(topology.CLIENT_NS, argv), capture_output=True, text=True, timeout=60)
    return HardenedResult(views, anonymous, done.stdout.strip())
