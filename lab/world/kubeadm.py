"""A real control plane in the lab, set up by the real kubeadm from the kubeadm configuration in
each node's own user_data, as an operator follows the README: `kubeadm init --config ...
--upload-certs` on the first node, then the node's join.sh on each other node, one at a time, with
the join secrets init printed.

What differs from a VM (docs/lab.md, "The real control plane", lists it with the kubelet stand-in's):
- kubelet and the container runtime are the lab's (`lab.world.kubelet`), so the phases that talk to
  kubelet or need a Node object are skipped: preflight (it checks kubelet, the runtime and the
  machine), kubelet-start, wait-control-plane (it asks kubelet's health port), mark-control-plane
  and kubelet-finalize on init; preflight, kubelet-start, kubelet-wait-bootstrap,
  control-plane-join/mark-control-plane and wait-control-plane on join. The lab waits for the
  apiservers itself, through the VIP. Everything else (certificates, kubeconfigs, the stacked etcd
  member add, the static pod manifests, upload-config, upload-certs, the bootstrap token, the
  addons' API objects) is kubeadm's own.
- kubeadm runs inside the node (its mount namespace: /etc/kubernetes and /var/lib/etcd land on the
  node's disk) from this machine's `.tools/bin`, not from a package.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.plan import JOIN_SECRETS, KUBEADM_CONFIG, KUBEADM_JOIN
from lab.world.engine import NODE_PATH, Engine

INIT_SKIPS = ("preflight", "kubelet-start", "wait-control-plane", "mark-control-plane", "kubelet-finalize")
JOIN_SKIPS = (
    "preflight",
    "kubelet-start",
    "kubelet-wait-bootstrap",
    "control-plane-join/mark-control-plane",
    "wait-control-plane",
)
ADMIN_CONF = "/etc/kubernetes/admin.conf"
APISERVER_CERT = "/etc/kubernetes/pki/apiserver.crt"
KUBEADM_TIMEOUT_S = 600


class KubeadmError(RuntimeError):
    """kubeadm failed on a node; the message carries the end of its output."""


@dataclass(frozen=True)
class JoinSecrets:
    """What `kubeadm init --upload-certs` prints for the control-plane join (join.sh's variables)."""

    token: str
    ca_cert_hash: str
    certificate_key: str

    def environment(self) -> dict[str, str]:
        values = {"token": self.token, "caCertHash": self.ca_cert_hash, "certificateKey": self.certificate_key}
        return {JOIN_SECRETS[field][1]: value for field, value in values.items()}


def join_secrets(init_output: str) -> JoinSecrets:
    """The join secrets from init's printed control-plane join command."""
    found = {
        "token": re.search(r"--token\s+([a-z0-9]{6}\.[a-z0-9]{16})", init_output),
        "hash": re.search(r"--discovery-token-ca-cert-hash\s+(sha256:[0-9a-f]{64})", init_output),
        "key": re.search(r"--certificate-key\s+([0-9a-f]{64})", init_output),
    }
    missing = [k for k, m in found.items() if m is None]
    if missing:
        raise KubeadmError(f"kubeadm init printed no {', '.join(missing)} for the join: {init_output[-800:]}")
    token, ca_hash, key = (m.group(1) for m in found.values() if m is not None)
    return JoinSecrets(token, ca_hash, key)


def _run(engine: Engine, argv: list[str], env: dict[str, str], log: Path) -> str:
    started = time.monotonic()
    done = subprocess.run(
        engine.enter(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]),
        capture_output=True,
        text=True,
        timeout=KUBEADM_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    with open(log, "a") as f:
        f.write(f"=== {' '.join(argv)}: exit {done.returncode} after {time.monotonic() - started:.1f} s\n{output}")
    if done.returncode != 0:
        raise KubeadmError(f"{engine.name}: {' '.join(argv[:2])} failed ({done.returncode}): {output.strip()[-1500:]}")
    return output


def _env(bindir: Path) -> dict[str, str]:
    return {"PATH": f"{bindir}:{NODE_PATH}", "HOME": "/root", "LANG": "C.UTF-8"}


def init(engine: Engine, bindir: Path) -> JoinSecrets:
    """`kubeadm init --config <the node's kubeadm.yaml> --upload-certs` on the first node."""
    argv = ["kubeadm", "init", "--config", KUBEADM_CONFIG, "--upload-certs", f"--skip-phases={','.join(INIT_SKIPS)}"]
    output = _run(engine, argv, _env(bindir), engine.nodedir / "kubeadm.log")
    return join_secrets(output)


def join(engine: Engine, bindir: Path, secrets: JoinSecrets) -> None:
    """The node's join.sh with the secrets in its environment, as the README has an operator run it."""
    argv = ["sh", KUBEADM_JOIN, f"--skip-phases={','.join(JOIN_SKIPS)}"]
    _run(engine, argv, {**_env(bindir), **secrets.environment()}, engine.nodedir / "kubeadm.log")


def node_file(engine: Engine, path: str) -> Path:
    """A file kubeadm wrote under the node's /etc, as this host sees it (the node's disk holds /etc's
    upper layer, and the host has no /etc/kubernetes below it)."""
    if not path.startswith("/etc/"):
        raise ValueError(f"{path}: only files under /etc are read from the node's disk")
    return engine.nodedir / "disk" / path.lstrip("/")
