"""Do HTTP/2 clients spread over the apiservers again after one restarts? (`--goaway-chance`)

client-go keeps one HTTP/2 connection per client; haproxy balances connections, not requests. When an
apiserver restarts, its clients reconnect through the VIP to the others, and nothing moves them
back: the restarted one idles while the others carry everything. kube-apiserver's
`--goaway-chance` sends a random HTTP/2 GOAWAY on that fraction of requests, so clients reconnect
now and then and haproxy's round-robin spreads them again.

The scenario: CLIENTS kha-probes (requests only, each its own connection), the VIP holder's
apiserver restarted gracefully, then the holder's haproxy's current sessions per apiserver every
second for WATCH_S seconds. Run with and without the flag (`python -m lab.bench --goaway`).
"""

from __future__ import annotations

import copy
import csv
import io
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.plan import STATS_URI
from lab.scenarios.drills import _wait_for, one_holder
from lab.world import synth
from lab.world.harness import KUBEADM, TOOLS, Lab, synthesize_config
from lab.world.procs import Proc

CLIENTS = 9
RATE = 10.0  # requests a second per client
WATCH_S = 60.0
CHANCE = "0.02"  # the largest value kube-apiserver accepts: the effect shows within the watch


def goaway_doc(config: Path, outdir: Path, chance: str | None) -> dict:
    """The config synthesized with `--goaway-chance` (None: without)."""
    data = copy.deepcopy(yaml.safe_load(config.read_text()))
    if chance is not None:
        data.setdefault("kubernetes", {}).setdefault("apiserver_args", {})["goaway-chance"] = chance
    _, json_path = synthesize_config(data, outdir / ("goaway" if chance else "plain"))
    return synth.load(json_path)


def sessions(lab: Lab, node: str) -> dict[str, int]:
    """The node's haproxy: current sessions to each apiserver (haproxy's `scur`)."""
    url = f"http://127.0.0.1:{lab.health_port}{STATS_URI};csv"
    out = lab.nodes[node].engine.run(["curl", "-sf", "--max-time", "2", url]).stdout
    rows = csv.DictReader(io.StringIO(out.removeprefix("# ")))
    return {r["svname"]: int(r["scur"] or 0) for r in rows if r.get("type") == "2"}


@dataclass
class Spread:
    chance: str | None
    restarted: str
    before: dict[str, int]
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # seconds after restart

    def restarted_share(self, at: float) -> float:
        """The restarted apiserver's share of the sessions at the sample nearest `at` seconds."""
        t, counts = min(self.samples, key=lambda s: abs(s[0] - at))
        total = sum(counts.values())
        return counts.get(self.restarted, 0) / total if total else 0.0


def spread_after_restart(doc: dict, chance: str | None, workdir: Path) -> Spread:
    with Lab(doc, control_plane=KUBEADM) as lab:
        lab.wait_steady(timeout=180)
        clients = [
            Proc(
                f"probe-{i}",
                [
                    *lab.client_argv_prefix(),
                    str(TOOLS / "kha-probe"),
                    "--kubeconfig",
                    str(lab.kubeconfig),
                    "--rate",
                    f"{RATE:g}",
                    "--no-watch",
                    "--no-informer",
                    "--namespace",
                    f"kha-goaway-{i}",
                ],
                lab.workdir / f"probe-{i}.log",
            ).start()
            for i in range(CLIENTS)
        ]
        try:
            time.sleep(10)
            holder = one_holder(lab)
            before = sessions(lab, holder)
            kubelet = lab.nodes[holder].kubelet
            assert kubelet is not None
            starts = kubelet.starts.get("kube-apiserver", 0)
            kubelet.signal("kube-apiserver", signal.SIGTERM)
            _wait_for(lambda: kubelet.starts.get("kube-apiserver", 0) > starts, time.monotonic() + 90)
            lab.wait_steady(timeout=90)
            result = Spread(chance, holder, before)
            t0 = time.monotonic()
            while time.monotonic() - t0 < WATCH_S:
                result.samples.append((time.monotonic() - t0, sessions(lab, holder)))
                time.sleep(1.0)
            return result
        finally:
            for c in clients:
                c.stop()
