"""`python -m lab [show | up | drill NAME | soak --seed N | ops ARGS | cleanup]`: build the lab from
the synthesized JSON, show the nodes and the VIP holder, keep a real control plane up until
interrupted, run one drill, a chaos soak or the operator's tool, and tear everything down."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from lab.scenarios import operate, realcp, registry, soak
from lab.scenarios.variants import VARIANTS, lab_for
from lab.world import images, probe, synth, topology
from lab.world.harness import CONTROL_PLANES, KUBEADM, STAND_IN, Lab, acquire_lock, synthesize


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    ap.add_argument("--json", type=Path, help="synthesized cdk.tf.json (default: cdktf.out/stacks/*/cdk.tf.json)")
    ap.add_argument("--variant", choices=VARIANTS, default="ours", help="our keepalived.conf, or the seed's settings")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs) after teardown")
    sub = ap.add_subparsers(dest="command")
    sub.add_parser("show", help="build, print nodes and VIP holder, tear down (the default)")
    sub.add_parser(
        "up",
        help="build with the real control plane (kubeadm, etcd, kube-apiserver), print one JSON line when ready, "
        "wait for SIGINT or SIGTERM, tear down",
    )
    drill = sub.add_parser("drill", help="run one drill")
    drill.add_argument("name", choices=list(registry.LAB_DRILLS))
    sub.add_parser("cleanup", help="remove leftovers of a crashed run (kha-* namespaces, engines, mounts, work dirs)")
    sub.add_parser("images", help="build the stand-in images for the JSON's image references (cached)")
    soak_cmd = sub.add_parser("soak", help="a seeded random sequence of faults; checks the invariants")
    soak_cmd.add_argument(
        "--seed", type=int, required=True, help="the schedule follows from it: a failing run is replayed with it"
    )
    soak_cmd.add_argument("--minutes", type=float, default=2.0)
    soak_cmd.add_argument("--out", type=Path, help="also write the faults, attempts and holder samples here (JSON)")
    soak_cmd.add_argument(
        "--control-plane",
        choices=CONTROL_PLANES,
        default=STAND_IN,
        help="what serves the API: the stand-in, or kubeadm's real one with kha-probe and three more invariants",
    )
    ops = sub.add_parser("ops", help="run `python -m ops ARGS` from the admin network (e.g. status, roll --dry-run)")
    ops.add_argument("args", nargs=argparse.REMAINDER)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    if args.command == "cleanup":
        with acquire_lock(timeout=600):  # never under a running lab
            for line in topology.cleanup():
                print("removed", line)
        return 0
    if args.command == "up":
        return _up(args)
    doc = synth.load(args.json or synthesize())
    if args.command == "soak":
        return _soak(doc, args)
    if args.command == "images":
        with acquire_lock(timeout=600), tempfile.TemporaryDirectory(prefix=topology.WORKDIR_PREFIX) as tmp:
            print(images.ensure(synth.parse(doc).images(), Path(tmp)))
        return 0
    if args.command == "ops":
        with Lab(doc, keep=args.keep) as lab:
            lab.wait_steady()
            print(lab.describe())
            command, *rest = args.args or ["status"]
            run = lab.operator(operate.default_config()).run(command, lab.stack_json, *rest)
            print(f"$ {shlex.join(run.argv)}\n{run.output}[exit {run.returncode}]")
            return run.returncode
    if args.command == "drill" and registry.ENTRIES[args.name].kind is registry.CONTROL:
        result = registry.ENTRIES[args.name].run(doc, args.variant)
    else:
        with lab_for(doc, args.variant, keep=args.keep) as lab:
            lab.wait_steady()
            print(lab.describe())
            if args.command != "drill":
                return 0
            result = registry.ENTRIES[args.name].run(lab)
            print(lab.describe())
            if args.keep:
                print(f"logs kept in {lab.workdir}")
    print(json.dumps(asdict(result), indent=2))
    return 0


def ready_line(lab: Lab) -> dict:
    """What `up` prints once the endpoint serves: enough to reach it with kubectl from outside."""
    return {
        "vip": lab.stack.vip,
        "endpoint": f"{lab.stack.vip}:{lab.frontend_port}",
        "client_netns": topology.CLIENT_NS,
        "kubeconfig": str(lab.kubeconfig),
        "nodes": [{"name": n.name, "netns": n.ns, "address": n.address} for n in lab.nodes.values()],
    }


def _up(args: argparse.Namespace) -> int:
    """The lab with the real control plane until SIGINT or SIGTERM; the JSON is synthesized afresh
    from CONFIG (as `make synth` does) unless --json names one."""
    doc = synth.load(args.json or synthesize(fresh=True))
    stop = threading.Event()
    with Lab(doc, keep=args.keep, control_plane=KUBEADM) as lab:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        lab.wait_steady(timeout=180)
        print(lab.describe(), file=sys.stderr)
        print(json.dumps(ready_line(lab)), flush=True)
        stop.wait()
        print("lab: stopping: tearing everything down", file=sys.stderr, flush=True)
    return 0


def _soak(doc: dict, args: argparse.Namespace) -> int:
    duration = args.minutes * 60
    real = args.control_plane == KUBEADM
    replay = f"python -m lab soak --seed {args.seed} --minutes {args.minutes:g}" + (
        " --control-plane kubeadm" if real else ""
    )
    if real and args.variant != "ours":
        print("error: --control-plane kubeadm runs our configs only (--variant ours)", file=sys.stderr)
        return 2
    extra: list[soak.Invariant] = []
    built = Lab(doc, keep=args.keep, control_plane=KUBEADM) if real else lab_for(doc, args.variant, keep=args.keep)
    with built as lab:
        lab.wait_steady(timeout=180)
        # Three etcd members: two faulty nodes at once lose quorum, and then nothing can serve.
        faults = soak.schedule(args.seed, duration, list(lab.nodes), max_busy_nodes=1 if real else None)
        print(
            f"soak seed {args.seed}, {args.minutes:g} min, {len(faults)} faults:",
            *map(str, faults),
            sep="\n  ",
            flush=True,
        )
        recorder = realcp.start_probe(lab) if real else None
        happened, attempts, samples = soak.run(
            soak.LabOperations(lab), faults, duration, log=lambda line: print(line, flush=True)
        )
        if recorder is not None:
            time.sleep(2)
            recorder.stop()
            requests, events = recorder.snapshot()
            acknowledged = sum(r.ok and r.op in probe.WRITES for r in requests)
            extra = [
                soak.writes_kept(probe.lost_writes(requests, realcp.read_back(lab)), acknowledged),
                soak.watch_order(probe.rv_regressions(events)),
                soak.etcd_leader(realcp.etcd_leaders(lab)),
            ]
            failed = sum(not r.ok for r in requests)
            print(f"kha-probe: {len(requests)} requests, {failed} failed; {len(events)} watch events", flush=True)
        workdir = str(lab.workdir)
        left: list[str] = []
        lab.before_release = lambda: left.extend(soak.leftovers(workdir))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "nodes": list(lab.nodes),
                    "faults": [asdict(f) for f in happened],
                    "attempts": [asdict(a) for a in attempts],
                    "samples": [asdict(x) for x in samples],
                }
            )
        )
    report = soak.check(args.seed, happened, list(lab.nodes), attempts, samples, left)
    report.invariants[-1:-1] = extra  # before leaks
    print(report.format(replay))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
