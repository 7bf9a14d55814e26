"""A fake ssh runner: nodes simulated in memory that answer the tool's scripts as node.sh would.

It reads the calls after node.sh's marker (here-documents included), applies them to the simulated
node and prints the same sections. Time is virtual: `sleep` advances it, so health gates and
hand-overs run without waiting. Every change a script makes is logged in `changes`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from dataclasses import dataclass, field

from ops.inventory import Inventory
from ops.remote import CALLS_MARKER
from ops.ssh import Result
from userdata.cloudconfig import parse_docker_run
from userdata.render import HAPROXY_CFG, KEEPALIVED_CONF

STAGE = "/tmp/kubeadm-ha-validate."


@dataclass
class FakeContainer:
    image: str
    label: str | None
    running: bool = True


@dataclass
class FakeNode:
    name: str
    address: str
    priority: int
    files: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # path -> (content, owner, mode)
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    state: str = "BACKUP"
    since: int = 0
    holds_vip: bool = False
    apiservers: dict[str, str] = field(default_factory=dict)  # name -> UP/DOWN
    haproxy_started: int = 1000
    reachable: bool = True
    images: set[str] = field(default_factory=set)
    # Test knobs: a state keepalived shows after its next (re)start, a step that fails.
    state_after_start: str = "BACKUP"
    fail_step: str | None = None
    boot_failed: str | None = None  # what the boot script's marker says


class FakeCluster:
    def __init__(self, inv: Inventory, holder: str | None = None) -> None:
        self.inv = inv
        self.now = 1_800_000_000.0
        self.changes: list[tuple[str, str]] = []
        self.calls: list[tuple[str, list[str]]] = []
        self.vip_moves = 0
        self.backups_take_over = True  # False: VRRP between the nodes is broken
        # Called with (node name, number of scripts that node has run) before each script.
        self.before_script = lambda node, count: None
        self.nodes: dict[str, FakeNode] = {}
        for i, n in enumerate(inv.nodes):
            node = FakeNode(n.name, n.address, 150 - 10 * i, since=int(self.now) - 100)
            node.files = {f.path: (f.content, f.owner, f.permissions) for f in n.files}
            node.containers = {r.name: FakeContainer(r.image, r.label) for r in n.runs if r.name}
            node.images = {r.image for r in n.runs}
            node.apiservers = {m.name: "UP" for m in inv.nodes}
            self.nodes[n.name] = node
        first = self.nodes[holder or inv.nodes[0].name]
        first.state, first.holds_vip = "MASTER", True

    # --- plumbing

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def node(self, name: str) -> FakeNode:
        return self.nodes[name]

    def scripts_of(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def __call__(self, argv: list[str], stdin: str, timeout: float) -> Result:
        host = argv[argv.index("--") + 1]
        node = next(n for n in self.nodes.values() if n.address == host)
        self.before_script(node.name, self.scripts_of(node.name))
        calls = stdin.split(f"\n{CALLS_MARKER}\n", 1)[1]
        self.calls.append((node.name, calls.splitlines()))
        self.now += 0.05
        if not node.reachable:
            return Result(255, "", f"ssh: connect to host {host} port 22: Connection timed out")
        out: list[str] = []
        lines = calls.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line or line.startswith("trap "):
                continue
            stops = line.endswith(" || exit 3")
            line = line.removesuffix(" || exit 3")
            body = None
            if line.endswith("<<'KHA_EOF'"):
                line = line.removesuffix(" <<'KHA_EOF'")
                end = lines.index("KHA_EOF", i)
                body = base64.b64decode("".join(lines[i:end])).decode()
                i = end + 1
            words = shlex.split(line)
            rc = self.run(node, words, body, out)
            if rc != 0 and stops:
                return Result(3, "\n".join(out) + "\n", "")
        return Result(0, "\n".join(out) + "\n", "")

    # --- the node.sh functions

    def run(self, node: FakeNode, words: list[str], body: str | None, out: list[str]) -> int:
        fn, args = words[0], words[1:]
        if fn == "kha_report":
            self.report(node, args[5:], out)
        elif fn == "kha_boot":
            out += ["@@ boot", *([node.boot_failed] if node.boot_failed else [])]
        elif fn == "kha_addresses":
            self.addresses(node, out)
        elif fn == "kha_put":
            path, owner, mode = args
            if not path.startswith(STAGE):
                self.changes.append((node.name, f"write {path}"))
            node.files[path] = (body or "", owner, mode)
        elif fn == "kha_step":
            name, command = args[0], args[1:]
            rc, output = (1, "boom") if name == node.fail_step else self.step(node, command)
            out.append(f"@@ step {name} {rc}")
            out.append(output)
            return rc
        else:
            raise AssertionError(f"unknown call {words}")
        return 0

    def step(self, node: FakeNode, command: list[str]) -> tuple[int, str]:
        if command[0] == "kha_image":
            return (
                (0, "")
                if command[1] in node.images
                else (1, f"Error response from daemon: pull access denied for {command[1]}")
            )
        if command[0] == "mkdir":
            return 0, ""
        if command[:3] == ["docker", "run", "--rm"]:
            return self.check(node, command)
        self.changes.append((node.name, " ".join(command[:4])))
        if command[0] == "kha_recreate":
            name, line = command[1], parse_docker_run(command[2:])
            node.containers[name] = FakeContainer(line.image, line.label)
            self.started(node, name)
            return 0, ""
        if command[:3] == ["docker", "stop", "keepalived"]:
            node.containers["keepalived"].running = False
            self.keepalived_stops(node)
            return 0, ""
        if command[:3] == ["docker", "start", "keepalived"]:
            node.containers["keepalived"].running = True
            self.started(node, "keepalived")
            return 0, ""
        if command == ["docker", "kill", "--signal", "USR2", "haproxy"]:
            node.haproxy_started += 1
            return 0, ""
        if command == ["kha_reload_keepalived", "keepalived"]:
            return 0, ""
        raise AssertionError(f"unknown step {command}")

    def check(self, node: FakeNode, command: list[str]) -> tuple[int, str]:
        """haproxy -c / keepalived -t on the staged files: broken when the file says BROKEN."""
        volumes = [command[i + 1] for i, a in enumerate(command) if a == "--volume"]
        staged = {v.split(":")[1]: v.split(":")[0] for v in volumes}
        tool = command[command.index("--entrypoint") + 1]
        spec = HAPROXY_CFG if tool == "haproxy" else KEEPALIVED_CONF
        content = node.files[f"{staged[spec.folder.container]}/{spec.key}"][0]
        if "BROKEN" in content:
            if tool == "haproxy":
                return (
                    1,
                    f"[ALERT]    (1) : config : parsing [{spec.container_path}:3] : "
                    "unknown keyword 'BROKEN' in 'global' section",
                )
            return 143, "(Line 3) Unknown keyword 'BROKEN'"
        return (0, "Configuration file is valid") if tool == "haproxy" else (143, "")

    def started(self, node: FakeNode, name: str) -> None:
        if name == "haproxy":
            node.haproxy_started = int(self.now) + 1
        else:
            node.state, node.since = node.state_after_start, int(self.now)

    def keepalived_stops(self, node: FakeNode) -> None:
        was_holder = node.holds_vip
        node.state, node.since, node.holds_vip = "STOP", int(self.now), False
        if was_holder and self.backups_take_over:
            candidates = [
                n
                for n in self.nodes.values()
                if n is not node and n.containers["keepalived"].running and n.state == "BACKUP"
            ]
            if candidates:
                new = max(candidates, key=lambda n: n.priority)
                new.state, new.holds_vip, new.since = "MASTER", True, int(self.now)
                self.vip_moves += 1

    def addresses(self, node: FakeNode, out: list[str]) -> None:
        out.append("@@ addresses")
        out.append(f"2: ens3    inet {node.address}/24 brd 192.0.2.255 scope global ens3\\       valid_lft forever")
        if node.holds_vip:
            out.append(f"2: ens3    inet {self.inv.vip}/32 scope global ens3\\       valid_lft forever")

    def report(self, node: FakeNode, files: list[str], out: list[str]) -> None:
        out += ["@@ time", str(int(self.now)), "@@ state"]
        if node.state:
            out += [f"state={node.state}", "instance=DEMO_API", f"priority={node.priority}", f"since={node.since}"]
        self.addresses(node, out)
        out.append("@@ stats")
        haproxy = node.containers.get("haproxy")
        if haproxy and haproxy.running:
            out.append("# pxname,svname,status,check_status,last_chk,type,")
            for name, status in node.apiservers.items():
                check = "L7OK" if status == "UP" else "L4CON"
                out.append(
                    f"kube-apiserver,{name},{status},{check},{'200 OK' if status == 'UP' else 'Connection refused'},2,"
                )
            out += ["@@ started", f"haproxy_process_start_time_seconds {node.haproxy_started}"]
        for name in ("haproxy", "keepalived"):
            out.append(f"@@ container {name}")
            c = node.containers.get(name)
            if c:
                info = {
                    "State": {"Running": c.running, "Status": "running" if c.running else "exited"},
                    "Config": {"Image": c.image, "Labels": {"io.kubeadm-ha.run": c.label}},
                    "Image": "sha256:" + "0" * 64,
                }
                out.append(json.dumps(info))
        out.append("@@ files")
        for path in files:
            if path in node.files:
                content, owner, mode = node.files[path]
                out.append(f"{hashlib.sha256(content.encode()).hexdigest()} {owner}:{mode.lstrip('0')} {path}")
            else:
                out.append(f"missing - {path}")
        out.append("@@ end")
