"""What a node's haproxy and keepalived containers are doing, read from Docker: its events (start,
die) and each container's log, line by line, stamped with the monotonic clock when read.

`docker logs --follow` ends when its container dies, so a new follower starts at each start
event, from the last line already seen: a container restarted by Docker's policy keeps its one
stream of lines. The hooks are haproxy's "Server x/y is DOWN|UP" and keepalived's "Entering X
STATE" and priority changes: the lines the drills' timings are taken from.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.world.engine import ContainerEvent, Engine
from lab.world.procs import LineHook, Proc
from lab.world.synth import SynthError
from userdata.cloudconfig import WrittenFile

_SERVER = re.compile(r"Server ([^/\s]+)/(\S+) is (UP|DOWN)")
_VRRP = re.compile(r"\((\S+)\) Entering (\w+) STATE")
# Lines after which keepalived may still act on its own: a state change, a new priority.
_VRRP_ACTIVITY = re.compile(r"Entering \w+ STATE|effective priority|VRRP_Script\(\S+\) (succeeded|failed)")
_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z (.*)$")

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


def _docker_time(stamp: str, fraction: str | None) -> tuple[str, int]:
    """A sortable key for Docker's RFC 3339 timestamps (nanoseconds, trailing zeros trimmed)."""
    return stamp, int((fraction or "0").ljust(9, "0")[:9])


@dataclass
class ContainerWatch:
    """One container as the lab follows it: running or not, its starts and deaths, its log."""

    engine: Engine
    name: str
    log: Path
    on_line: LineHook
    running: bool = False
    history: list[ContainerEvent] = field(default_factory=list)
    _last: tuple[str, int] | None = None
    _followers: list[Proc] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: ContainerEvent) -> bool:
        """Take a start or die of this container; False for a start already taken (the engine's
        event and `sync` can both report the run that Docker began as the engine booted). The
        caller follows the log of a run it takes, after resetting what the last run said."""
        if event.container != self.name:
            return False
        with self._lock:
            if event.action == "start" and self.running:
                return False
            if event.action == "start":
                self.running = True
            elif event.action == "die":
                self.running = False
            self.history.append(event)
        return True

    def follow(self) -> None:
        """Start following the log from the last line seen (the whole log the first time)."""
        with self._lock:
            ended = [f for f in self._followers if not f.running]
            self._followers = [f for f in self._followers if f not in ended]
        for f in ended:
            f.stop()  # reap the follower of an earlier run (its stream ended with the container)
        with self._lock:
            since = [] if self._last is None else ["--since", f"{self._last[0]}.{self._last[1]:09d}Z"]
            proc = Proc(
                f"{self.engine.name}-{self.name}-logs",
                ["docker", "logs", "--follow", "--timestamps", *since, self.name],
                self.log,
                self._read,
                env={**os.environ, **self.engine.env},
            )
            proc.start()
            self._followers.append(proc)

    def _read(self, t: float, line: str) -> None:
        m = _STAMPED.match(line)
        if not m:
            return
        key = _docker_time(m.group(1), m.group(2))
        with self._lock:
            if self._last is not None and key <= self._last:
                return  # already seen by the follower of an earlier run
            self._last = key
        self.on_line(t, m.group(3))

    def sync(self) -> ContainerEvent | None:
        """After an engine start: a start event for a container that Docker started before the
        lab listened, or None when it is not running."""
        state = self.engine.docker("inspect", "--format", "{{.State.Running}}", self.name, check=False).strip()
        return ContainerEvent(time.monotonic(), self.name, "start", None) if state == "true" else None

    def restarts_after(self, t: float) -> list[tuple[float, float]]:
        """(die, next start) pairs after t: how long Docker left the container down each time."""
        out, died = [], None
        for e in self.history:
            if e.t < t:
                continue
            if e.action == "die":
                died = e.t
            elif e.action == "start" and died is not None:
                out.append((died, e.t))
                died = None
        return out

    def stop_following(self) -> None:
        with self._lock:
            followers, self._followers = self._followers, []
        for f in followers:
            f.stop(grace=1)

    def engine_gone(self) -> None:
        self.running = False
        self.stop_following()


class NodeDaemons:
    """haproxy and keepalived of one node, and what their logs say about their state."""

    def __init__(self, name: str, engine: Engine, haproxy: str, keepalived: str):
        self.name = name
        self.engine = engine
        self.events: list[Event] = []
        self.servers_down: set[str] = set()
        self.vrrp_state = "INIT"
        self.vrrp_changed = time.monotonic()
        self._lock = threading.Lock()
        self.haproxy = ContainerWatch(engine, haproxy, engine.nodedir / "haproxy.log", self._on_haproxy)
        self.keepalived = ContainerWatch(engine, keepalived, engine.nodedir / "keepalived.log", self._on_keepalived)

    @property
    def containers(self) -> tuple[ContainerWatch, ContainerWatch]:
        return (self.haproxy, self.keepalived)

    def container(self, name: str) -> ContainerWatch:
        return next(c for c in self.containers if c.name == name)

    def on_event(self, event: ContainerEvent) -> None:
        for c in self.containers:
            if c.on_event(event):
                self._started_or_died(event)
                if event.action == "start":
                    c.follow()

    def _started_or_died(self, event: ContainerEvent) -> None:
        if event.container == self.haproxy.name and event.action == "start":
            with self._lock:
                self.servers_down.clear()  # haproxy starts with every server up
        if event.container == self.keepalived.name and event.action in ("start", "die"):
            self.vrrp_state = "INIT" if event.action == "start" else "STOPPED"
            self.vrrp_changed = event.t

    def _record(self, t: float, source: str, text: str) -> None:
        with self._lock:
            self.events.append(Event(t, source, text))

    def _on_haproxy(self, t: float, line: str) -> None:
        m = _SERVER.search(line)
        if m:
            with self._lock:
                (self.servers_down.add if m.group(3) == "DOWN" else self.servers_down.discard)(m.group(2))
        if m or line.startswith("["):  # haproxy's own messages, not the per-connection log
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
            return next(
                (e for e in self.events if e.source == source and e.t >= since and re.search(pattern, e.text)), None
            )

    def events_between(self, source: str, pattern: str, t0: float, t1: float) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.source == source and t0 <= e.t <= t1 and re.search(pattern, e.text)]

    def sync(self) -> None:
        """After an engine start, take the starts that the engine's event stream may have missed."""
        for c in self.containers:
            if event := c.sync():
                self.on_event(event)

    def engine_gone(self) -> None:
        for c in self.containers:
            c.engine_gone()
        with self._lock:
            self.servers_down.clear()  # what a dead haproxy saw; the next start begins afresh
        self.vrrp_state = "STOPPED"
        self.vrrp_changed = time.monotonic()

    def stop(self) -> None:
        for c in self.containers:
            c.stop_following()
