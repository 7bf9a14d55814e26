"""An OpenSSH server on every node, as the cloud image runs one: Debian's sshd inside the node's
network, mount and pid namespaces, on the node's address, with a host key the lab generates for
each run, and the keys an operator needs to reach it (`Keys`).

What cloud-init does on a VM from the instance's key pair, the lab does once per node, on the
node's disk: the image's default user with the admin's public key in its authorized_keys and
passwordless sudo (cloud-init's sudoers line). The operator's tool logs in as that user and runs
its scripts through `sudo -n sh -s`, as in production; sudo's PATH finds the node's own docker,
which talks to the node's engine on the default socket.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from lab.world.engine import NODE_PATH, Engine
from lab.world.procs import Proc
from lab.world.topology import run

USER = "ubuntu"  # the cloud image's default user (config: nodes.image ubuntu-24.04)
SSHD = "/usr/sbin/sshd"  # an absolute path: sshd re-executes itself for each connection
PORT = 22
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Keys:
    """One lab run's keys: the admin's identity, each node's host key, a known_hosts naming them."""

    identity: Path
    known_hosts: Path
    host_keys: dict[str, Path]

    @property
    def public_key(self) -> str:
        return Path(f"{self.identity}.pub").read_text().strip()


def _keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at `path` (private, 0600) and `path`.pub; returns the public key."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return Path(f"{path}.pub").read_text().strip()


def make_keys(keydir: Path, addresses: dict[str, str]) -> Keys:
    """Fresh keys for this run: nothing the lab generates outlives its work directory."""
    keydir.mkdir(mode=0o700, parents=True)
    identity = keydir / "admin_ed25519"
    _keygen(identity, "kha-lab admin")
    host_keys, known = {}, []
    for name, address in addresses.items():
        key = keydir / f"host_{name}_ed25519"
        kind, blob, *_ = _keygen(key, f"root@{name}").split()
        host_keys[name] = key
        known.append(f"{address} {kind} {blob}\n")
    known_hosts = keydir / "known_hosts"
    known_hosts.write_text("".join(known))
    return Keys(identity, known_hosts, host_keys)


def provision(engine: Engine, public_key: str) -> None:
    """The default user, its authorized key and passwordless sudo, on the node's disk (first boot).

    The password field is `*` (no password, not locked): with UsePAM off sshd refuses a `!` one."""
    home = f"/home/{USER}"
    engine.run(
        [
            "sh",
            "-ec",
            f"""
id -u {USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/sh --password '*' {USER}
install -d -m 0700 -o {USER} -g {USER} {home}/.ssh
printf '%s\\n' '{public_key}' > {home}/.ssh/authorized_keys
chown {USER}:{USER} {home}/.ssh/authorized_keys
chmod 0600 {home}/.ssh/authorized_keys
printf '%s\\n' '{USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
""",
        ]
    )


def config(address: str, host_key: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {address}:{PORT}",
            f"HostKey {host_key}",
            "PidFile /run/sshd.pid",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "LogLevel VERBOSE",
            "",
        ]
    )


class Sshd:
    """The node's sshd: started at each boot (its run directory is on the fresh /run), stoppable."""

    def __init__(self, engine: Engine, address: str, host_key: Path):
        self.engine = engine
        self.address = address
        self.config = engine.nodedir / "sshd_config"
        self.config.write_text(config(address, host_key))
        self.proc: Proc | None = None
        self._listening = threading.Event()

    def _on_line(self, _t: float, line: str) -> None:
        if f"Server listening on {self.address} port {PORT}" in line:
            self._listening.set()

    def start(self) -> None:
        self.engine.run(["mkdir", "-p", "-m", "0755", "/run/sshd"])  # privilege separation
        self._listening.clear()
        self.proc = Proc(
            f"{self.engine.name}-sshd",
            self.engine.enter(["env", "-i", f"PATH={NODE_PATH}", SSHD, "-D", "-e", "-f", str(self.config)]),
            self.engine.nodedir / "sshd.log",
            self._on_line,
        )
        self.proc.start()
        if not self._listening.wait(START_TIMEOUT):
            raise RuntimeError(
                f"{self.engine.name}: sshd did not listen on {self.address}:{PORT} "
                f"within {START_TIMEOUT} s (see {self.engine.nodedir}/sshd.log)"
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
