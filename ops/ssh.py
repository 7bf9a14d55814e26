"""Reach the nodes through the system's `ssh`, so ~/.ssh/config (ProxyJump, bastions, keys) applies.

One round trip per step: a POSIX shell script goes to `sh -s` on the node's stdin. The options the
tool relies on come first on the command line, and for ssh the first value given wins: neither
~/.ssh/config nor --ssh-option can turn off BatchMode or strict host-key checking.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol

from ops import CONNECT_TIMEOUT_S, SSH_TIMEOUT_S, OpsError

# ssh's own exit status for "could not connect or authenticate"; a remote script never uses it.
UNREACHABLE = 255


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def unreachable(self) -> bool:
        return self.returncode == UNREACHABLE

    def reason(self) -> str:
        """The last line ssh (or the script) wrote to stderr, for a one-line message."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


class Runner(Protocol):
    def __call__(self, argv: list[str], stdin: str, timeout: float) -> Result: ...


def run_process(argv: list[str], stdin: str, timeout: float) -> Result:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(UNREACHABLE, "", f"no answer within {timeout:g} s")
    except FileNotFoundError:
        raise OpsError(f"{argv[0]}: command not found; install the OpenSSH client") from None
    return Result(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class SshOptions:
    user: str | None = None
    options: tuple[str, ...] = ()
    connect_timeout: int = CONNECT_TIMEOUT_S
    # Run the script as root through passwordless sudo (a cloud image's default user); off for root logins.
    sudo: bool = True


def ssh_argv(host: str, opts: SshOptions) -> list[str]:
    argv = [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    for option in opts.options:
        argv += ["-o", option]
    argv += ["-o", f"ConnectTimeout={opts.connect_timeout}"]
    if opts.user:
        argv += ["-l", opts.user]
    return [*argv, "--", host, "sudo -n sh -s" if opts.sudo else "sh -s"]


@dataclass(frozen=True)
class Ssh:
    """Runs a script on a node; `timeout` bounds the whole round trip."""

    opts: SshOptions = SshOptions()
    runner: Runner = run_process
    timeout: float = SSH_TIMEOUT_S

    def run(self, host: str, script: str, timeout: float | None = None) -> Result:
        return self.runner(ssh_argv(host, self.opts), script, timeout or self.timeout)
