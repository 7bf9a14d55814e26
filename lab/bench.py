"""`python -m lab.bench`: every drill N times for our configs and for the seed's keepalived
settings, in one run, and one table per drill; then the operator's tool's drills (`lab.scenarios.operate`).
The drills, their titles and goals are `lab.scenarios.registry`'s.

Figures, not assertions: timings depend on the machine. The tests check behaviour; this prints
what the behaviour costs, with the command and date, so a change in the configs can be compared.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import yaml

from cluster.kubernetes import KUBERNETES_VERSION
from lab.scenarios import drills, goaway, operate, realcp, registry
from lab.scenarios.operate import RollResult, StatusResult
from lab.scenarios.registry import CONTROL, DRILL, OPERATOR
from lab.scenarios.variants import VARIANTS, lab_for
from lab.world import probe, synth
from lab.world.harness import KUBEADM, Lab, synthesize, synthesize_config
from lab.world.topology import run


def _stats(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} / {fmt.format(max(values))}"


def _max(values: list[int]) -> str:
    return str(max(values)) if values else "-"


def _max_s(values: list[float]) -> str:
    return f"{max(values):.2f}" if values else "-"


def _sum(values: list[int]) -> str:
    """Total, with the count per run: `1 (0,0,1,0,0)`."""
    return f"{sum(values)} ({','.join(map(str, values))})" if values else "-"


Column = tuple[str, Callable[[list[drills.DrillResult]], str]]
COLUMNS: list[Column] = [
    ("runs", lambda rs: str(len(rs))),
    ("outage s med/max", lambda rs: _stats([r.outage_s for r in rs], "{:.2f}")),
    ("failed med/max", lambda rs: _stats([r.failed for r in rs], "{:.0f}")),
    (
        "slowest after fault s med/max",
        lambda rs: _stats([r.slowest_s for r in rs if r.slowest_s is not None], "{:.2f}"),
    ),
    ("not recovered", lambda rs: str(sum(not r.recovered for r in rs))),
    ("VIP moved", lambda rs: str(sum(r.holder_before is not None and r.holder_after != r.holder_before for r in rs))),
    ("MASTER entries max", lambda rs: _max([r.master_transitions for r in rs])),
    ("holders at end", lambda rs: ",".join(str(h) for h in sorted({r.holders_at_end for r in rs}))),
]
OPTIONAL: list[Column] = [
    ("heal/boot outage s med/max", lambda rs: _stats([r.second.outage_s for r in rs if r.second], "{:.2f}")),
    (
        "heal/boot not recovered",
        lambda rs: str(sum(not r.second.recovered for r in rs if r.second)) if any(r.second for r in rs) else "-",
    ),
    ("detection s med/max", lambda rs: _stats([r.detection_s for r in rs if r.detection_s is not None], "{:.2f}")),
    (
        "stopped accepting s med/max",
        lambda rs: _stats([r.not_accepting_s for r in rs if r.not_accepting_s is not None], "{:.2f}"),
    ),
    (
        "last served by it s med/max",
        lambda rs: _stats([r.last_served_s for r in rs if r.last_served_s is not None], "{:.2f}"),
    ),
    (
        "failed after detection max",
        lambda rs: _max([r.failed_after_detection for r in rs if r.failed_after_detection is not None]),
    ),
    ("slowest attempt s med/max", lambda rs: _stats([r.slowest_s for r in rs if r.slowest_s is not None], "{:.2f}")),
    (f"attempts > {drills.SLOW} s max", lambda rs: _max([r.slow_attempts for r in rs if r.slow_attempts is not None])),
    ("VIP moves", lambda rs: _sum([r.vip_moves for r in rs if r.vip_moves is not None])),
    (
        "served after 1st haproxy s med/max",
        lambda rs: _stats([r.served_after_s for r in rs if r.served_after_s is not None], "{:.2f}"),
    ),
    ("two holders s max", lambda rs: _max_s([r.double_holder_s for r in rs if r.double_holder_s is not None])),
]


def render(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as aligned columns, a rule under the first (the header); the last column is free text."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in [*widths, len(row[-1])]))
    return lines


def table(name: str, by_variant: dict[str, list[drills.DrillResult]], errors: dict[str, list[str]]) -> str:
    entry = registry.ENTRIES[name]
    all_results = [r for rs in by_variant.values() for r in rs]
    cols = COLUMNS + [c for c in OPTIONAL if c[1](all_results) not in ("-", "")]
    rows = [("config", *(c[0] for c in cols), "errors")]
    for variant, rs in by_variant.items():
        rows.append((variant, *(c[1](rs) for c in cols), str(len(errors.get(variant, [])))))
    lines = [f"## {name}: {entry.title}", f"goal: {entry.goal}", *render(rows)]
    ours, seed = by_variant.get("ours"), by_variant.get("seed")
    if ours and seed and entry.kind is DRILL:
        o, s = statistics.median(r.outage_s for r in ours), statistics.median(r.outage_s for r in seed)
        lines.append(f"seed/ours median outage: {s / o:.1f}x" if o > 0 else f"seed median outage {s:.2f} s, ours 0 s")
    for variant, errs in errors.items():
        lines += [f"error ({variant}): {e}" for e in errs]
    return "\n".join(lines)


# --- the real control plane -----------------------------------------------------------------------
# The targets for the real control plane, printed beside the figures, never asserted.
REAL_GOALS = {
    "haproxy-kill": "probe outage max <= 0.2 s",
    "node-cut": "probe outage max <= 0.7 s (0.3 s for the VIP, then the client's retransmission is reset)",
    "apiserver-term": "0 failed requests",
}


def _gaps(results: list[realcp.RealResult], watcher: str, idle: str | None = None) -> str:
    values = [(r.idle_watch_gap_s[idle] if idle else r.probe.watch_gap_s)[watcher] for r in results]
    seen = [v for v in values if v is not None]
    missing = len(values) - len(seen)
    return _stats(seen, "{:.2f}") + (f" ({missing} never)" if missing else "")


def real_bench(doc: dict, runs: int, names: list[str], say: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Each drill of `realcp.DRILLS` `runs` times on a lab with the real control plane, kha-probe
    running throughout; then the writes it had acknowledged, read back through the VIP."""
    results: dict[str, list[realcp.RealResult]] = {n: [] for n in names}
    errors: list[str] = []
    with Lab(doc, control_plane=KUBEADM) as lab:
        lab.wait_steady(timeout=180)
        recorder = realcp.start_probe(lab)
        idle = realcp.start_idle_watchers(lab)
        try:
            for name in names:
                for i in range(runs):
                    try:
                        results[name].append(realcp.run(lab, recorder, name, idle))
                    except Exception as e:  # one failed run must not lose the others' figures
                        errors.append(f"{name}: {type(e).__name__}: {e}")
                    say(f"  real  {name:<24} run {i + 1}/{runs}")
        finally:
            time.sleep(2)
            for watcher in idle.values():
                watcher.stop()
            recorder.stop()
        requests, events = recorder.snapshot()
        # An idle watcher may notice a fault only after its drill has ended (client-go's health
        # check): its gaps are read again from everything it delivered until the bench's end.
        for r in (r for rs in results.values() for r in rs):
            assert r.drill.t_fault is not None
            for label, watcher in idle.items():
                later = watcher.snapshot()[1]
                r.idle_watch_gap_s[label] = {
                    w: probe.watch_gap(requests, later, w, r.drill.t_fault) for w in probe.WATCHERS
                }
        final = realcp.read_back(lab)
        leaders = realcp.etcd_leaders(lab)
    rows = [
        (
            "drill",
            "runs",
            "client outage s med/max",
            "probe failed",
            "probe outage s med/max",
            "raw watch gap s med/max",
            "informer gap s med/max",
            *(f"idle raw watch gap s ({label})" for label in realcp.IDLE_WATCHERS),
            "goal",
        )
    ]
    for name, rs in results.items():
        rows.append(
            (
                name,
                str(len(rs)),
                _stats([r.drill.outage_s for r in rs], "{:.2f}"),
                _sum([r.probe.failed for r in rs]),
                _stats([r.probe.outage_s for r in rs], "{:.2f}"),
                _gaps(rs, "raw"),
                _gaps(rs, "informer"),
                *(_gaps(rs, "raw", label) for label in realcp.IDLE_WATCHERS),
                REAL_GOALS.get(name, ""),
            )
        )
    lost = probe.lost_writes(requests, final)
    lines = [
        f"## the real control plane: kubeadm's etcd, kube-apiserver v{KUBERNETES_VERSION} and kube-controller-manager, "
        "measured by kha-probe (client-go, one HTTP/2 connection) and the stand-in drills' client",
        "client outage: the stand-in drills' Python client (a new TLS connection, GET /healthz, every 20 ms)",
        "probe: 20 requests/s, 1 s timeout each (GET, create, update of ConfigMaps); outage: fault -> first success "
        "after the last failure; watch gap: fault -> the first event of a write started after the fault",
        "idle: watch-only kha-probes (nothing sent on their connection, as an informer-only controller), with "
        "client-go's HTTP/2 health check at its defaults (ping after 30 s idle, 15 s to answer) or tuned",
        *render(rows),
        f"probe requests {len(requests)}, failed {sum(not r.ok for r in requests)}; acknowledged writes "
        f"{sum(r.ok and r.op in probe.WRITES for r in requests)}, lost {len(lost)}" + (f": {lost[:5]}" if lost else ""),
        f"resourceVersions going back in a watcher's stream: {len(probe.rv_regressions(events))}; "
        f"etcd at the end: {leaders}",
    ]
    return lines, errors


def goaway_bench(config: Path, say: Callable[[str], None]) -> list[str]:
    """The restarted apiserver's share of the holder's haproxy sessions, with and without --goaway-chance."""
    lines = [
        f"## --goaway-chance: {goaway.CLIENTS} client-go clients at {goaway.RATE:g} requests/s each, the holder's "
        f"kube-apiserver restarted gracefully, then its share of the holder's haproxy sessions (fair: "
        f"{1 / 3:.2f})",
    ]
    rows: list[tuple[str, ...]] = [
        ("apiserver flag", "sessions before", "share at 1 s", "15 s", "30 s", "60 s", "sessions at 60 s")
    ]
    with tempfile.TemporaryDirectory(prefix="kha-goaway-") as tmp:
        for chance in (None, goaway.CHANCE):
            doc = goaway.goaway_doc(config, Path(tmp), chance)
            r = goaway.spread_after_restart(doc, chance, Path(tmp))
            say(f"  goaway {chance}: done")
            rows.append(
                (
                    f"goaway-chance {chance}" if chance else "none",
                    str(r.before),
                    *(f"{r.restarted_share(t):.2f}" for t in (1, 15, 30, 60)),
                    str(r.samples[-1][1]),
                )
            )
    return lines + render(rows)


# --- the operator's tool ------------------------------------------------------------------------
def _med_max(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {max(values):.2f}" if values else "-"


def roll_table(title: str, results: list[RollResult]) -> list[str]:
    rows = [
        (
            "drill",
            "nodes",
            "runs",
            "exit",
            "took s med/max",
            "failed",
            "failed outside hand-over",
            "outage s med/max",
            "slowest s max",
            "VIP moves",
            "nodes changed",
            "status after",
        )
    ]
    by: dict[tuple[str, int], list[RollResult]] = {}
    for r in results:
        by.setdefault((r.drill, r.nodes), []).append(r)
    for (drill, nodes), rs in by.items():
        rows.append(
            (
                drill,
                str(nodes),
                str(len(rs)),
                ",".join(str(r.returncode) for r in rs),
                _med_max([r.took_s for r in rs]),
                str(sum(r.failed for r in rs)),
                str(sum(r.failed_outside_handover for r in rs)),
                _med_max([r.outage_s for r in rs]),
                f"{max(r.slowest_s or 0 for r in rs):.2f}",
                ",".join(str(r.vip_moves) for r in rs),
                ",".join(str(len(r.changed)) for r in rs),
                ",".join("-" if r.status_after is None else str(r.status_after) for r in rs),
            )
        )
    return [f"## {title}", *render(rows), *(f"goal {d}: {registry.ENTRIES[d].goal}" for d in by_drills(results))]


def by_drills(results: list[RollResult]) -> list[str]:
    return list(dict.fromkeys(r.drill for r in results if r.drill in registry.of(OPERATOR)))


def status_table(results: list[StatusResult]) -> list[str]:
    rows = [("fault", "exit", "missing", "unexpected", "status s", "exit once put back", "findings")]
    for r in results:
        rows.append(
            (
                r.scenario,
                str(r.returncode),
                str(len(r.missing)),
                str(len(r.unexpected)),
                f"{r.took_s:.2f}",
                str(r.healthy_after),
                " | ".join(r.findings),
            )
        )
    status = registry.ENTRIES["status"]
    return [f"## {status.title}", *render(rows), f"goal: {status.goal}"]


def ops_bench(doc: dict, runs: int, say: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Every drill of the tool: config and image rolls `runs` times each (there and back), the
    refused and the interrupted roll, each status fault once, on the lab of `doc`; then a config
    and an image roll of a five-node cluster. Returns the tables' lines and the errors."""
    config = operate.default_config()
    rolls: list[RollResult] = []
    statuses: list[StatusResult] = []
    errors: list[str] = []

    def attempt(what: str, fn: Callable[[], object]) -> None:
        try:
            out = fn()
            (statuses if isinstance(out, StatusResult) else rolls).append(out)  # type: ignore[arg-type]
        except Exception as e:  # one failed run must not lose the others' figures
            errors.append(f"{what}: {type(e).__name__}: {e}")
        say(f"  ops   {what}")

    with Lab(doc) as lab:
        op = lab.operator(config)
        base, changed = lab.stack_json, lab.write_stack(operate.config_change(doc), "config")
        for i in range(runs):
            attempt(
                f"roll-config {i + 1}/{runs}", partial(operate.config_roll, lab, op, changed if i % 2 == 0 else base)
            )
        current = changed if runs % 2 else base
        attempt(
            "roll-refused",
            lambda: operate.refused_roll(lab, op, lab.write_stack(operate.broken_haproxy_cfg(doc), "broken"), current),
        )
        other = base if current == changed else changed
        attempt("roll-unreachable", lambda: operate.unreachable_mid_roll(lab, op, other))
        attempt("roll-unreachable, then again", lambda: operate.roll(lab, op, "roll-resume", other))
        bumped = lab.write_stack(operate.image_change(lab, config, lab.workdir / "images"), "images")
        for i in range(runs):
            attempt(f"roll-image {i + 1}/{runs}", partial(operate.image_roll, lab, op, bumped if i % 2 == 0 else base))
        current = bumped if runs % 2 else base
        for name in operate.SCENARIOS:
            attempt(f"status {name}", partial(operate.status_drill, lab, op, current, name))
    with tempfile.TemporaryDirectory(prefix="kha-ops-five-") as tmp:
        five_config, five_stack = synthesize_config(
            operate.five_nodes(yaml.safe_load(config.read_text())), Path(tmp) / "five"
        )
        five = synth.load(five_stack)
        with Lab(five) as lab:
            op = lab.operator(five_config)
            attempt(
                "roll-config (5 nodes)",
                lambda: operate.config_roll(lab, op, lab.write_stack(operate.config_change(five), "config")),
            )
            attempt(
                "roll-image (5 nodes)",
                lambda: operate.image_roll(
                    lab, op, lab.write_stack(operate.image_change(lab, five_config, Path(tmp) / "images"), "images")
                ),
            )
    lines = (
        roll_table("the operator's tool: rolls over SSH from the admin network", rolls) + [""] + status_table(statuses)
    )
    return lines, errors


def _versions() -> str:
    haproxy = run(["haproxy", "-v"]).stdout.splitlines()[0]
    keepalived = (run(["keepalived", "-v"], check=False).stderr or "").splitlines()[0]
    docker = run(["dockerd", "--version"]).stdout.strip()
    return (
        f"stand-in images with {haproxy}; {keepalived}; {docker}; kernel {platform.release()}; "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lab.bench", description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--control-runs", type=int, default=2, help="runs of each negative control (each builds a lab)")
    ap.add_argument(
        "--json",
        type=Path,
        help="synthesized cdk.tf.json (default: the config synthesized now into cdktf.out, as make synth does, "
        "so the figures are those of this checkout, never of a stale stack)",
    )
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--drills", nargs="+", choices=list(registry.LAB_DRILLS), default=list(registry.LAB_DRILLS))
    ap.add_argument("--ops-runs", type=int, default=5, help="config and image rolls of the operator's tool (0: none)")
    ap.add_argument("--real-runs", type=int, default=3, help="runs of each drill with the real control plane (0: none)")
    ap.add_argument("--real-drills", nargs="+", choices=list(realcp.DRILLS), default=list(realcp.DRILLS))
    ap.add_argument(
        "--goaway", action="store_true", help="also measure how clients spread after a restart, with --goaway-chance"
    )
    ap.add_argument("--out", type=Path, help="also write every result as JSON here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = args.json or synthesize(fresh=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # of what is measured, before anyone rewrites it
    doc = synth.load(path)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    t_start = time.monotonic()
    results: dict[str, dict[str, list[drills.DrillResult]]] = {d: {v: [] for v in args.variants} for d in args.drills}
    errors: dict[str, dict[str, list[str]]] = {d: {} for d in args.drills}
    substitutions: set[str] = set()

    def attempt(name: str, variant: str, fn: Callable[[], drills.DrillResult]) -> None:
        try:
            results[name][variant].append(fn())
        except Exception as e:  # one failed run must not lose the others' figures
            errors[name].setdefault(variant, []).append(f"{type(e).__name__}: {e}")
        total = args.control_runs if registry.ENTRIES[name].kind is CONTROL else args.runs
        print(
            f"  {variant:<5} {name:<24} run {len(results[name][variant]) + len(errors[name].get(variant, []))}/{total}",
            file=sys.stderr,
            flush=True,
        )

    interrupted = None
    try:
        for variant in args.variants:
            regular = [d for d in args.drills if registry.ENTRIES[d].kind is DRILL]
            if regular:
                with lab_for(doc, variant) as lab:
                    substitutions.update(lab.substitutions)
                    lab.wait_steady()
                    for name in regular:
                        for _ in range(args.runs):
                            attempt(name, variant, partial(registry.ENTRIES[name].run, lab))
            for name in (d for d in args.drills if registry.ENTRIES[d].kind is CONTROL):
                for _ in range(args.control_runs):
                    attempt(name, variant, partial(registry.ENTRIES[name].run, doc, variant))
    except (KeyboardInterrupt, SystemExit) as e:  # print what was measured; the lab is torn down
        interrupted = f"INTERRUPTED ({type(e).__name__} {e}): the figures below are partial"

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    real_lines, real_errors = (
        ([], []) if interrupted or not args.real_runs else real_bench(doc, args.real_runs, args.real_drills, say)
    )
    goaway_lines = goaway_bench(operate.default_config(), say) if args.goaway and not interrupted else []
    ops_lines, ops_errors = ([], []) if interrupted or not args.ops_runs else ops_bench(doc, args.ops_runs, say)

    command = [Path(sys.executable).name, "-m", "lab.bench", *(argv if argv is not None else sys.argv[1:])]
    print(f"command: {' '.join(command)}")
    print(f"date: {started} (took {time.monotonic() - t_start:.0f} s)")
    if interrupted:
        print(interrupted)
    print(f"input: {path} (sha256 {digest})")
    print(f"software: {_versions()}")
    for line in sorted(substitutions):
        print(f"lab substitution: {line}")
    print(
        "outage: fault injection -> start of the first served attempt after the last failed one "
        "(20 ms client ticks, 1 s timeout)"
    )
    print(
        "slowest after fault: the longest single attempt that started after the fault "
        "(a failed one counts its 1 s timeout)"
    )
    for name in args.drills:
        print()
        print(table(name, results[name], errors[name]))
    if real_lines:
        print()
        print("\n".join(real_lines))
        print("\n".join(f"error (real): {e}" for e in real_errors))
    if goaway_lines:
        print()
        print("\n".join(goaway_lines))
    if ops_lines:
        print()
        print("\n".join(ops_lines))
        print("\n".join(f"error (ops): {e}" for e in ops_errors))
    if args.out:
        args.out.write_text(
            json.dumps({d: {v: [asdict(r) for r in rs] for v, rs in by.items()} for d, by in results.items()}, indent=1)
        )
    return (
        0
        if not interrupted
        and not ops_errors
        and not real_errors
        and not any(errs for by in errors.values() for errs in by.values())
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
