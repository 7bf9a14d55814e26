"""The Kubernetes release the project builds, validates against and writes kubeadm's files for.

Pinned once here: the Makefile reads KUBERNETES_VERSION and ETCD_VERSION from these lines to build
the tools (kube/), the config's `kubernetes.version` defaults to KUBERNETES_VERSION, and a test
holds kube/*/go.mod to them. The rules for `kubernetes.*` in a cluster config live here too.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from pathlib import Path

KUBERNETES_VERSION = "1.37.2"
# The etcd kubeadm 1.37 deploys (cmd/kubeadm/app/constants: DefaultEtcdVersion "3.7.0-0"), as the
# Go module proxy serves it (go.etcd.io/etcd/server/v3 v3.7.0).
ETCD_VERSION = "3.7.0"

# kubeadm's own default service subnet, and the pod subnet most CNIs (flannel, canal) expect.
DEFAULT_POD_SUBNET = "10.244.0.0/16"
DEFAULT_SERVICE_SUBNET = "10.96.0.0/12"

# Every flag of kube-apiserver KUBERNETES_VERSION, one a line, as `kube-apiserver --help` lists them
# (tests/test_kubeadm.py holds this file to the binary that `make setup` builds).
FLAGS_FILE = Path(__file__).resolve().parent / f"kube-apiserver-flags-v{KUBERNETES_VERSION}.txt"

# Flags the product sets itself, from another field or per node: a second value would fight it.
OWNED_FLAGS = {
    "secure-port": "set ports.apiserver instead (kubeadm's bindPort on every node)",
    "advertise-address": "each node advertises its own address; the product sets it per node",
    "bind-address": "kube-apiserver listens on every address of the node, as haproxy's checks expect",
}
# kube-apiserver refuses --anonymous-auth beside --authentication-config; with anonymous-auth "false"
# the product writes an authentication configuration instead (docs/design.md, "A hardened apiserver").
ANONYMOUS_AUTH = "anonymous-auth"
AUTHENTICATION_CONFIG = "authentication-config"
SHUTDOWN_DELAY = "shutdown-delay-duration"

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
_FLAG_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def version_tuple(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version)
    if not match:
        raise ValueError(f"not a version: {version!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def supported_version(value: str) -> str:
    """`value` as kubeadm writes it (v1.37.2), or ValueError saying which versions are allowed."""
    pinned = version_tuple(KUBERNETES_VERSION)
    allowed = f"allowed: v{pinned[0]}.{pinned[1]}.0 to v{KUBERNETES_VERSION}"
    why = "the release whose kubeadm validates these files and whose kube-apiserver flags the config is checked against"
    match = _VERSION.match(value)
    if not match:
        raise ValueError(f"not a Kubernetes version such as v{KUBERNETES_VERSION}; {allowed} ({why})")
    got = version_tuple(value)
    if got[:2] != pinned[:2]:
        raise ValueError(f"Kubernetes {got[0]}.{got[1]} is not supported; {allowed} ({why})")
    if got[2] > pinned[2]:
        raise ValueError(f"v{got[0]}.{got[1]}.{got[2]} is not a release this project knows; {allowed}")
    return "v{}.{}.{}".format(*got)


@cache
def apiserver_flags() -> frozenset[str]:
    return frozenset(line.strip() for line in FLAGS_FILE.read_text().splitlines() if line.strip())


def apiserver_arg_problem(flag: str, value: str) -> str | None:
    """What is allowed instead of `flag: value` in kubeadm's apiServer.extraArgs, or None when it may go there."""
    if flag.startswith("-"):
        return f"write the flag without its leading dashes: {flag.lstrip('-')}"
    if not _FLAG_NAME.match(flag):
        return "not a flag name: lowercase letters, digits and '-'"
    if flag in OWNED_FLAGS:
        return OWNED_FLAGS[flag]
    if flag not in apiserver_flags():
        close = difflib.get_close_matches(flag, sorted(apiserver_flags()), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"not a flag of kube-apiserver v{KUBERNETES_VERSION}{hint}"
    if flag == ANONYMOUS_AUTH and value not in ("true", "false"):
        return 'allowed: "true" or "false"'
    return None


def apiserver_args_conflict(args: dict[str, str]) -> str | None:
    """Why these flags cannot go together, or None."""
    if ANONYMOUS_AUTH in args and AUTHENTICATION_CONFIG in args:
        return (
            f"kube-apiserver refuses {ANONYMOUS_AUTH} beside {AUTHENTICATION_CONFIG}; give one: with "
            f'{ANONYMOUS_AUTH}: "false" the product writes an authentication configuration that keeps anonymous '
            "access to the health endpoints only; with your own file, it decides (haproxy's checks need /readyz)"
        )
    return None
