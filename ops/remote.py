"""The scripts the tool sends to a node, and the parsing of what they print.

A script is node.sh (the functions) followed by the calls of one round trip; file contents travel
base64-encoded in here-documents, so no quoting can break them. The output is a list of "@@ name"
sections; a report without its closing section did not run to the end and counts as unreachable.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from cluster.plan import BOOT_FAILED_MARK, METRICS_URI, STATS_URI
from userdata.render import CONTAINERS, RUN_LABEL, STATE_FILE

NODE_SH = Path(__file__).with_name("node.sh").read_text()
CALLS_MARKER = "# --- calls"
_HEREDOC = "KHA_EOF"
_ADDRESS = re.compile(r"\binet (\d+\.\d+\.\d+\.\d+)/(\d+)")


class Script:
    """The calls of one round trip; `text()` is what goes to the node's `sh -s`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def call(self, *args: str) -> Script:
        self.lines.append(shlex.join(args))
        return self

    def step(self, name: str, *command: str) -> Script:
        """A step whose failure ends the script (the tool reads which step failed from its section)."""
        self.lines.append(f"{shlex.join(['kha_step', name, *command])} || exit 3")
        return self

    def put(self, path: str, owner: str, mode: str, content: str) -> Script:
        encoded = base64.encodebytes(content.encode()).decode()
        self.lines.append(f"{shlex.join(['kha_put', path, owner, mode])} <<'{_HEREDOC}' || exit 3\n{encoded}{_HEREDOC}")
        return self

    def report(self, health_port: int, files: list[str]) -> Script:
        return self.call(
            "kha_report", STATE_FILE, str(health_port), STATS_URI, METRICS_URI, " ".join(CONTAINERS), *files
        )

    def boot(self) -> Script:
        """The first boot's failure marker (/etc/kubeadm-ha/boot.sh), as the section "boot"."""
        return self.call("kha_boot", BOOT_FAILED_MARK)

    def text(self) -> str:
        return f"{NODE_SH}\n{CALLS_MARKER}\n" + "\n".join(self.lines) + "\n"


def sections(stdout: str) -> list[tuple[list[str], list[str]]]:
    """(header words, lines) for each "@@" section, in order; blank lines dropped."""
    out: list[tuple[list[str], list[str]]] = []
    for line in stdout.splitlines():
        if line.startswith("@@ "):
            out.append((line[3:].split(), []))
        elif out and line.strip():
            out[-1][1].append(line)
    return out


@dataclass(frozen=True)
class Step:
    name: str
    returncode: int
    output: str


def steps(stdout: str) -> list[Step]:
    return [Step(h[1], int(h[2]), "\n".join(lines)) for h, lines in sections(stdout) if h[0] == "step" and len(h) == 3]


def failed_write(stdout: str) -> str | None:
    for header, _ in sections(stdout):
        if header[0] == "failed":
            return " ".join(header[1:])
    return None


@dataclass(frozen=True)
class Apiserver:
    name: str
    status: str  # UP, DOWN, "UP 1/2" while a change is being confirmed, MAINT, ...
    check: str  # the last check's result code (L7OK, L4CON, ...)
    last_check: str  # its text

    @property
    def down(self) -> bool:
        return not self.status.startswith("UP")


@dataclass(frozen=True)
class ContainerState:
    name: str
    exists: bool
    running: bool = False
    status: str = "missing"
    image: str = ""  # the reference it was created from
    image_id: str = ""
    label: str | None = None


@dataclass(frozen=True)
class FileState:
    path: str
    sha256: str | None  # None: missing
    owner: str = ""
    mode: str = ""


@dataclass(frozen=True)
class NodeReport:
    time: int
    state: dict[str, str]
    addresses: tuple[str, ...]
    haproxy_answers: bool
    apiservers: tuple[Apiserver, ...]
    haproxy_started: str | None
    containers: dict[str, ContainerState] = field(default_factory=dict)
    files: dict[str, FileState] = field(default_factory=dict)
    boot_failed: str | None = None  # what the first boot's script could not do, as its marker says

    def holds(self, vip: str) -> bool:
        return vip in self.addresses

    @property
    def keepalived_state(self) -> str | None:
        return self.state.get("state")


class ReportError(ValueError):
    """The node's answer is not a complete report."""


def parse_addresses(lines: list[str]) -> tuple[str, ...]:
    return tuple(m.group(1) for line in lines for m in [_ADDRESS.search(line)] if m)


def parse_stats(lines: list[str], backend: str = "kube-apiserver") -> tuple[Apiserver, ...]:
    if not lines:
        return ()
    rows = csv.DictReader(io.StringIO("\n".join(lines).removeprefix("# ")))
    return tuple(
        Apiserver(r["svname"], r["status"], r.get("check_status", "").removeprefix("* "), r.get("last_chk", ""))
        for r in rows
        if r.get("pxname") == backend and r.get("type") == "2"
    )


def parse_container(name: str, lines: list[str]) -> ContainerState:
    if not lines:
        return ContainerState(name, exists=False)
    try:
        info = json.loads(lines[0])
    except ValueError:
        return ContainerState(name, exists=False)
    state = info.get("State") or {}
    config = info.get("Config") or {}
    return ContainerState(
        name,
        exists=True,
        running=bool(state.get("Running")),
        status=str(state.get("Status", "")),
        image=str(config.get("Image", "")),
        image_id=str(info.get("Image", "")),
        label=(config.get("Labels") or {}).get(RUN_LABEL),
    )


def parse_files(lines: list[str]) -> dict[str, FileState]:
    out = {}
    for line in lines:
        digest, meta, path = line.split(" ", 2)
        if digest == "missing":
            out[path] = FileState(path, None)
        else:
            owner_group, _, mode = meta.rpartition(":")
            out[path] = FileState(path, digest, owner_group, mode.zfill(4))
    return out


def parse_report(stdout: str) -> NodeReport:
    found = {" ".join(h): lines for h, lines in sections(stdout)}
    if "end" not in found or "time" not in found:
        raise ReportError("the node's report is incomplete")
    state = dict(line.split("=", 1) for line in found.get("state", []) if "=" in line)
    stats = found.get("stats", [])
    started = next((line.split()[-1] for line in found.get("started", []) if line.strip()), None)
    return NodeReport(
        time=int(found["time"][0]),
        state=state,
        addresses=parse_addresses(found.get("addresses", [])),
        haproxy_answers=bool(stats),
        apiservers=parse_stats(stats),
        haproxy_started=started,
        containers={name: parse_container(name, found.get(f"container {name}", [])) for name in CONTAINERS},
        files=parse_files(found.get("files", [])),
        boot_failed=" ".join(found.get("boot", [])) or None,
    )
