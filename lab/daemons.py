"""haproxy and keepalived of one node, run natively with exactly the files its user_data writes.

In place of the containers, each daemon runs in the node's network namespace and in a private
mount namespace of its own. There the node's copy of every container directory that exists on
this host (in practice /etc/keepalived, where keepalived.conf names the check script) is
bind-mounted over the real one, so the paths in the configs resolve per node, and a tmpfs covers
/run so pid files of different nodes do not clash. Everything else is read from the node's
directory by explicit path, as the container's command line would.
"""

from __future__ import annotations

import re
import resource
import shlex
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.configs import global_maxconn
from lab.procs import Proc
from lab.synth import SynthError
from lab.topology import in_ns
from userdata.extract import WrittenFile

_SERVER = re.compile(r"Server ([^/\s]+)/(\S+) is (UP|DOWN)")
_VRRP = re.compile(r"\((\S+)\) Entering (\w+) STATE")
# Lines after which keepalived may still act on its own: a state change, a new priority.
_VRRP_ACTIVITY = re.compile(r"Entering \w+ STATE|effective priority|VRRP_Script\(\S+\) (succeeded|failed)")


# A user_data file put at the path where its container reads it.
PlacedFile = WrittenFile


def content_of(files: list[PlacedFile], container_path: str, node: str) -> str:
    for f in files:
        if f.path == container_path:
            return f.content
    raise SynthError(f"{node}: user_data writes no file that the container reads as {container_path}")


@dataclass(frozen=True)
class Event:
    t: float
    source: str
    text: str


def fd_cap(haproxy_cfg: str) -> list[str]:
    """`-n N` when this machine's hard open-files limit is below what the config's maxconn needs.

    haproxy needs about two descriptors per connection and refuses to start when it cannot raise
    its limit that far; Docker gives containers a far higher limit than this sandbox's hard one,
    which even root cannot raise here. Capping maxconn on the command line leaves the files as
    they are; connection counts in the lab stay far below either value.
    """
    maxconn = global_maxconn(haproxy_cfg)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if maxconn is None or hard == resource.RLIM_INFINITY or 2 * maxconn + 100 <= hard:
        return []
    return ["-n", str((hard - 100) // 2)]


class NodeDaemons:
    """Files, haproxy and keepalived of one node, and what their logs say about their state."""

    def __init__(self, name: str, ns: str, nodedir: Path, files: list[PlacedFile], haproxy_cfg: str, keepalived_conf: str):
        self.name = name
        self.ns = ns
        self.root = nodedir / "root"
        self.nodedir = nodedir
        self.files = files
        self.events: list[Event] = []
        self.servers_down: set[str] = set()
        self.vrrp_state = "INIT"
        self.vrrp_changed = 0.0
        self._lock = threading.Lock()
        cfg = content_of(files, haproxy_cfg, name)
        self.haproxy = Proc(f"{name}-haproxy", self._wrap(["haproxy", "-W", "-db", *fd_cap(cfg), "-f", self.local(haproxy_cfg)]),
                            nodedir / "haproxy.log", self._on_haproxy)  # fmt: skip
        self.keepalived = Proc(f"{name}-keepalived", self._wrap(["keepalived", "-n", "-l", "-D", "-f", self.local(keepalived_conf)]),
                               nodedir / "keepalived.log", self._on_keepalived)  # fmt: skip

    def local(self, container_path: str) -> str:
        """Where the node's copy of a container path lives in the lab."""
        return str(self.root / container_path.lstrip("/"))

    def place_files(self) -> None:
        """Write each file with its owner and mode; directories root-owned 0755 (script security)."""
        for f in self.files:
            path = Path(self.local(f.path))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f.content)
            user, _, group = f.owner.partition(":")
            shutil.chown(path, user, group or None)
            path.chmod(int(f.permissions, 8))
        for d in [self.root, *self.root.rglob("*")]:
            if d.is_dir():
                d.chmod(0o755)

    def _mounts(self) -> list[tuple[str, str]]:
        dirs = sorted({str(Path(f.path).parent) for f in self.files})
        return [(self.local(d), d) for d in dirs if Path(d).is_dir()]

    def _wrap(self, argv: list[str]) -> list[str]:
        steps = [f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in self._mounts()]
        steps += ["mount -t tmpfs -o mode=0755 lab-run /run", 'exec "$@"']
        return in_ns(self.ns, ["unshare", "--mount", "--propagation", "private", "sh", "-c", " && ".join(steps), "sh", *argv])

    def _record(self, t: float, source: str, text: str) -> None:
        with self._lock:
            self.events.append(Event(t, source, text))

    def _on_haproxy(self, t: float, line: str) -> None:
        m = _SERVER.search(line)
        if m:
            with self._lock:
                (self.servers_down.add if m.group(3) == "DOWN" else self.servers_down.discard)(m.group(2))
            self._record(t, "haproxy", line)

    def _on_keepalived(self, t: float, line: str) -> None:
        m = _VRRP.search(line)
        if m:
            self.vrrp_state = m.group(2)
        if _VRRP_ACTIVITY.search(line):
            self.vrrp_changed = t
            self._record(t, "keepalived", line)

    def first_event(self, source: str, pattern: str, since: float) -> Event | None:
        with self._lock:
            return next((e for e in self.events if e.source == source and e.t >= since and re.search(pattern, e.text)), None)

    def start_haproxy(self) -> None:
        with self._lock:
            self.servers_down.clear()  # haproxy starts with every server up
        self.haproxy.start()

    def start_keepalived(self) -> None:
        self.vrrp_state = "INIT"
        self.vrrp_changed = time.monotonic()
        self.keepalived.start()

    def stop(self) -> None:
        self.keepalived.stop()
        self.haproxy.stop()
