"""Run the real haproxy, keepalived and cloud-init checkers on rendered text; skip where they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: `make test` installs the Debian packages as root")


def _check_file(text: str, filename: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` with the path of a temporary file holding `text` appended."""
    require(command[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_text(text)
        return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)


def haproxy_check(text: str) -> subprocess.CompletedProcess[str]:
    return _check_file(text, "haproxy.cfg", "haproxy", "-c", "-f")


def cloud_init_schema(text: str) -> subprocess.CompletedProcess[str]:
    return _check_file(text, "user-data.yaml", "cloud-init", "schema", "--config-file")


def keepalived_check(conf: str, interface: str, scripts: dict[str, str] | None = None) -> list[str]:
    """Problems `keepalived -t` reports for `conf`, run where `interface` exists and the scripts are in place.

    keepalived 2.2.7 (Debian) ends its config test by SIGTERM-ing itself whatever it found, so the
    exit status says nothing: every line it prints is a problem. The check runs in a throw-away
    network namespace that has the interface, with the check scripts (file name -> text)
    bind-mounted where the container sees them.
    """
    require("keepalived", "ip", "unshare")
    if os.geteuid() != 0:
        pytest.skip("keepalived -t needs root to create a network namespace with the node's interface")
    ns = f"kha-t-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        conf_path = Path(tmp) / "keepalived.conf"
        conf_path.write_text(conf)
        for name, text in (scripts or {}).items():
            script_path = Path(tmp) / name
            script_path.write_text(text)
            script_path.chmod(0o755)
        try:
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            subprocess.run(
                ["ip", "-n", ns, "link", "add", interface, "type", "veth", "peer", "name", "peer0"],
                check=True,
                capture_output=True,
            )
            mount = f"mount --bind {tmp} /etc/keepalived && " if scripts else ""
            result = subprocess.run(
                ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                 f"mkdir -p /etc/keepalived && {mount}exec keepalived -t -f {conf_path}"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if result.returncode not in (0, -15, 143):
        return [f"exit status {result.returncode}", *result.stderr.splitlines()]
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
