"""Run the real haproxy, keepalived and cloud-init on rendered text; skip where they are missing.

The node's files are placed the way the containers see them: each mounted folder at its path in
the container, the state folder at its path, in a private mount namespace (tmpfs over the parent
folders, so nothing on this host changes), and, for keepalived, in a throw-away network namespace
that has the node's interface.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from userdata.render import CONTAINER_FILES, HAPROXY_CFG, KEEPALIVED_CONF, STATE_DIR


def require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: `make test` installs the Debian packages as root")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def _check_file(text: str, filename: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` with the path of a temporary file holding `text` appended."""
    require(command[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_text(text)
        return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)


def cloud_init_schema(text: str) -> subprocess.CompletedProcess[str]:
    return _check_file(text, "user-data.yaml", "cloud-init", "schema", "--config-file")


@contextmanager
def placed(files: Mapping[str, str]) -> Iterator[tuple[dict[str, Path], str]]:
    """The node files (by ContainerFile.key) in a temporary tree; yields (host folders, mount lines).

    The host folders are keyed by where the containers see them (the state folder included); the
    mount lines, run in a private mount namespace, put every folder there.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # keepalived's script security: no folder on the path writable by others
        folders = {STATE_DIR: root / "state"}
        (root / "state").mkdir(mode=0o755)
        for spec in CONTAINER_FILES:
            if spec.key not in files:
                continue
            host = root / spec.folder.container.strip("/").replace("/", "_")
            host.mkdir(mode=0o755, exist_ok=True)
            (host / spec.key).write_text(files[spec.key])
            (host / spec.key).chmod(int(spec.permissions, 8))
            folders[spec.folder.container] = host
        parents = sorted({str(Path(c).parent) for c in folders})
        lines = [f"mount -t tmpfs -o mode=0755 kha-t {p}" for p in parents]
        for container, host in folders.items():
            lines += [f"mkdir -p {container}", f"mount --bind {host} {container}"]
        yield folders, " && ".join(lines)


def in_mount_namespace(mounts: str, command: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{mounts} && exec {command}"]


@contextmanager
def node_netns(interface: str, address: str | None = None, gateway: str | None = None) -> Iterator[str]:
    """A throw-away network namespace with loopback and the node's interface up (a veth pair);
    `gateway` on the pair's other end, so that keepalived's network check finds it answering."""
    require("ip", "unshare")
    require_root("a network namespace with the node's interface")
    ns = f"kha-t-{uuid.uuid4().hex[:8]}"
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "-n", ns, "link", "add", interface, "type", "veth", "peer", "name", "peer0"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "link", "set", "peer0", "up"],
        ["ip", "-n", ns, "link", "set", interface, "up"],
    ]
    if address:
        steps.append(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", interface])
    if gateway:
        steps.append(["ip", "-n", ns, "addr", "add", f"{gateway}/24", "dev", "peer0"])
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def haproxy_check(files: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`haproxy -c` on the node's haproxy.cfg, with the files it loads where the container has them."""
    require("haproxy", "unshare")
    require_root("a private mount namespace to place the files where the container reads them")
    with placed(files) as (_, mounts):
        command = f"haproxy -c -f {shlex.quote(HAPROXY_CFG.container_path)}"
        return subprocess.run(in_mount_namespace(mounts, command), capture_output=True, text=True, timeout=60)


def keepalived_check(files: Mapping[str, str], interface: str) -> list[str]:
    """Problems `keepalived -t` reports for the node's keepalived.conf, run where `interface` exists.

    keepalived 2.2.7 (Debian) ends its config test by SIGTERM-ing itself whatever it found, so the
    exit status says nothing: every line it prints is a problem.
    """
    require("keepalived")
    with node_netns(interface) as ns, placed(files) as (_, mounts):
        command = f"keepalived -t -f {shlex.quote(KEEPALIVED_CONF.container_path)}"
        result = subprocess.run(
            ["ip", "netns", "exec", ns, *in_mount_namespace(mounts, command)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    if result.returncode not in (0, -15, 143):
        return [f"exit status {result.returncode}", *result.stderr.splitlines()]
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
