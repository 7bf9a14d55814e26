"""The Go probe's log (kha-probe, kube/README.md): its JSON lines read back, and what they must show.

One reader of the format for everyone who runs the probe: the drills, the soak and the tests ask
`problems` whether an acknowledged write was lost, whether a watcher missed a write, and whether
what a watcher saw ever went backwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

WATCHERS = ("raw", "informer")
WRITES = ("create", "update")


@dataclass(frozen=True)
class Request:
    op: str
    seq: int
    start: float
    end: float
    ok: bool
    code: int
    error: str | None
    rv: str | None
    key: str


@dataclass(frozen=True)
class Event:
    t: float
    watcher: str
    type: str
    name: str
    seq: int
    rv: str


@dataclass
class ProbeLog:
    requests: list[Request] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    watch_states: list[dict[str, Any]] = field(default_factory=list)
    ready: float | None = None
    done: dict[str, Any] | None = None


def parse(lines: Iterable[str]) -> ProbeLog:
    """The probe's stdout, line by line; events keep the order in which they were printed."""
    log = ProbeLog()
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        kind = row["kind"]
        if kind == "request":
            log.requests.append(
                Request(
                    row["op"], row["seq"], row["s"], row["e"], row["ok"], row["code"], row["err"], row["rv"], row["key"]
                )
            )
        elif kind == "event":
            log.events.append(Event(row["t"], row["watcher"], row["type"], row["name"], row["seq"], row["rv"]))
        elif kind == "watch":
            log.watch_states.append(row)
        elif kind == "ready":
            log.ready = row["t"]
        elif kind == "done":
            log.done = row
    return log


def problems(log: ProbeLog, stored: Mapping[str, int], watchers: Iterable[str] = WATCHERS) -> list[str]:
    """What the log and the ConfigMaps read back afterwards (name → data.seq) break, one line each.

    - every acknowledged create exists afterwards with its seq;
    - each watcher delivered an event for every acknowledged write (its name and resourceVersion),
      but the raw watch after a relist (410: the events in between are skipped by design);
    - for each watcher and object, resourceVersion and seq never go back; on the raw watch's one
      stream the resourceVersion never goes back at all (an informer's relist replays objects in
      name order, so there it holds per object only).
    Updates are unconditional: one that hangs can land after a later one to the same key, and
    that key's seq then goes back in the store as in every watch; on loopback it does not happen.
    """
    found: list[str] = []
    acked = [r for r in log.requests if r.ok and r.op in WRITES]
    for r in acked:
        if r.op == "create" and stored.get(r.key) != r.seq:
            got = "missing" if r.key not in stored else f"seq {stored[r.key]}"
            found.append(f"acknowledged create {r.key} (seq {r.seq}) lost: {got} afterwards")
    for watcher in watchers:
        events = [e for e in log.events if e.watcher == watcher]
        seen = {(e.name, e.rv) for e in events}
        relisted = watcher == "raw" and any(s["state"] == "relist" for s in log.watch_states)
        for r in acked:
            if (r.key, r.rv) not in seen and not relisted:
                found.append(f"{watcher} watch: no event for {r.op} {r.key} seq {r.seq} (rv {r.rv})")
        found += _backwards(watcher, events)
    return found


def _backwards(watcher: str, events: list[Event]) -> list[str]:
    found = []
    stream_rv = 0
    last: dict[str, tuple[int, int]] = {}  # name → (rv, seq)
    for e in events:
        rv = int(e.rv)  # kube-apiserver's resourceVersions are etcd's revisions
        if watcher == "raw" and rv < stream_rv:
            found.append(f"raw watch: resourceVersion went back from {stream_rv} to {rv} ({e.name})")
        stream_rv = max(stream_rv, rv)
        last_rv, last_seq = last.get(e.name, (0, -1))
        if rv < last_rv:
            found.append(f"{watcher} watch: {e.name} resourceVersion went back from {last_rv} to {rv}")
        if e.seq < last_seq:
            found.append(f"{watcher} watch: {e.name} seq went back from {last_seq} to {e.seq}")
        last[e.name] = (max(rv, last_rv), max(e.seq, last_seq))
    return found
