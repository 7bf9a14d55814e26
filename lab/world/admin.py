"""The administrators' side of the lab: a namespace inside access.admin_cidrs, routed to the nodes
by the subnet's gateway, that runs `python -m ops` as an operator would.

The admin's address is taken from the JSON's ingress rule for TCP port 22 (access.admin_cidrs), so
the emulated security group's rule is what lets it in; the client on the tenant network, outside
admin_cidrs, is not let in. The admin network is one veth from the router (the gateway
namespace) to the admin namespace: the admin holds one address of the prefix (/32) and reaches
the router on-link at the gateway's address, and the router forwards between the two. Nothing
else is routed: the router has no default route.

The tool runs with this lab run's key and known_hosts through `--ssh-option` and nothing else: its
own ssh command line (BatchMode, StrictHostKeyChecking, sudo on the node) is production's.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.world.sshd import USER, Keys
from lab.world.topology import PREFIX, in_ns, remove_ns, run

ADMIN_NS = PREFIX + "admin"
ADMIN_IF = PREFIX + "va"  # the router's end of the admin link
ROOT = Path(__file__).resolve().parent.parent.parent


def admin_address(prefix: str) -> str:
    """The admin's address: the prefix's first host (the address itself for a /32)."""
    net = ipaddress.ip_network(prefix)
    return str(net.network_address if net.num_addresses == 1 else next(net.hosts()))


class AdminNetwork:
    """The admin namespace and its link to the router; `up()` builds them, `down()` removes them."""

    def __init__(self, prefix: str, router_ns: str, router_address: str, ns: str = ADMIN_NS, router_if: str = ADMIN_IF):
        self.prefix = prefix
        self.ns, self.router_if = ns, router_if
        self.router_ns = router_ns
        self.router_address = router_address
        self.address = admin_address(prefix)

    def up(self) -> None:
        run(["ip", "netns", "add", self.ns])
        run(
            in_ns(
                self.ns,
                ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
            )
        )
        run(
            [
                "ip",
                "-n",
                self.router_ns,
                "link",
                "add",
                self.router_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                self.ns,
            ]
        )
        run(in_ns(self.router_ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        run(["ip", "-n", self.router_ns, "link", "set", self.router_if, "up"])
        run(["ip", "-n", self.router_ns, "route", "add", f"{self.address}/32", "dev", self.router_if])
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.ns, "addr", "add", f"{self.address}/32", "dev", "eth0"])
        run(["ip", "-n", self.ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", self.ns, "route", "add", f"{self.router_address}/32", "dev", "eth0"])
        run(["ip", "-n", self.ns, "route", "add", "default", "via", self.router_address])

    def down(self) -> None:
        remove_ns(self.ns)


@dataclass(frozen=True)
class ToolRun:
    """One run of the tool: its exit status and every output line, stamped when read."""

    argv: tuple[str, ...]
    returncode: int
    lines: tuple[tuple[float, str, str], ...]  # (monotonic time, "out" or "err", text)
    took_s: float

    @property
    def stdout(self) -> str:
        return "".join(f"{text}\n" for _, stream, text in self.lines if stream == "out")

    @property
    def stderr(self) -> str:
        return "".join(f"{text}\n" for _, stream, text in self.lines if stream == "err")

    @property
    def output(self) -> str:
        return "".join(f"{text}\n" for _, _, text in self.lines)

    def first(self, needle: str) -> float | None:
        """When the first line containing `needle` was read."""
        return next((t for t, _, text in self.lines if needle in text), None)


class Operator:
    """`python -m ops` in the admin namespace, logging in as the nodes' default user with this run's keys."""

    def __init__(self, keys: Keys, config: Path, log: Path):
        self.keys = keys
        self.config = config
        self.log = log

    def argv(self, command: str, stack: Path, *args: str) -> list[str]:
        return in_ns(
            ADMIN_NS,
            [
                sys.executable,
                "-m",
                "ops",
                command,
                "--config",
                str(self.config),
                "--stack",
                str(stack),
                "--ssh-user",
                USER,
                "--ssh-option",
                f"IdentityFile={self.keys.identity}",
                "--ssh-option",
                "IdentitiesOnly=yes",
                "--ssh-option",
                f"UserKnownHostsFile={self.keys.known_hosts}",
                "--ssh-option",
                "GlobalKnownHostsFile=/dev/null",
                *args,
            ],
        )

    def run(
        self,
        command: str,
        stack: Path,
        *args: str,
        on_line: Callable[[float, str, str], None] | None = None,
        timeout: float = 600,
    ) -> ToolRun:
        """Run the tool to its end; `on_line(t, stream, text)` sees each line as it comes."""
        argv = self.argv(command, stack, *args)
        lines: list[tuple[float, str, str]] = []
        lock = threading.Lock()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)

        def read(stream, name: str) -> None:
            for raw in stream:
                line = (time.monotonic(), name, raw.rstrip("\n"))
                with lock:
                    lines.append(line)
                if on_line:
                    on_line(*line)

        readers = [
            threading.Thread(target=read, args=(s, n), daemon=True)
            for s, n in ((proc.stdout, "out"), (proc.stderr, "err"))
        ]
        for r in readers:
            r.start()
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            for r in readers:
                r.join(5)
        result = ToolRun(tuple(argv), returncode, tuple(sorted(lines)), time.monotonic() - t0)
        with open(self.log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{result.output}[exit {returncode}]\n")
        return result
