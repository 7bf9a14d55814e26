"""Figures for the cloud: seconds from start to `cloud ready`, and the memory of its processes.

`python -m cloud.bench [--runs N]` (project virtualenv). The first start after `make setup-cloud`
is the cold one (Python byte-code and the page cache not yet warm); later starts are warm.

`python -m cloud.bench --endpoint [--runs N]` (as root): the example deployed with `cdktf deploy`
on one cloud, N times: how long the deploy took, the seconds from its return to the VIP's first
answer from the client namespace, each node's boot as the hypervisor logged it, and the destroy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from cloud import handle, paths, playground


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def name(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    for service in ("keystone", "neutron", "sdk_worker"):
        if service in text:
            return service
    return "launcher (with compute and image)" if "-m cloud" in text else Path(argv[0].decode()).name


def measure(runs: int) -> None:
    times: list[float] = []
    for i in range(runs):
        cloud = handle.start()
        try:
            if cloud.ready_after is not None:
                times.append(cloud.ready_after)
            pids = [cloud.proc.pid, *handle.alive(handle.descendants(cloud.proc.pid))]
            per: dict[str, list[int]] = {}
            for pid in pids:
                try:
                    per.setdefault(name(pid), []).append(rss_kib(pid))
                except OSError:
                    pass
            print(
                f"run {i + 1}: cloud ready after {cloud.ready_after:.1f} s"
                f" ({cloud.value('started in')} inside the launcher)"
            )
            if i == 0:
                for what, sizes in sorted(per.items()):
                    print(f"  RSS {what}: {sum(sizes) / 1024:.0f} MiB in {len(sizes)} process(es)")
                total = sum(sum(s) for s in per.values())
                print(f"  RSS total: {total / 1024:.0f} MiB in {sum(len(s) for s in per.values())} processes")
        finally:
            handle.stop(cloud)
    if len(times) > 1:
        print(
            f"first {times[0]:.1f} s; later runs median {statistics.median(times[1:]):.1f} s "
            f"(min {min(times[1:]):.1f}, max {max(times[1:]):.1f})"
        )


def endpoint(runs: int) -> None:
    config = yaml.safe_load((paths.ROOT / "config" / "example.yaml").read_text())
    vip, port = config["vip"]["address"], config["ports"]["frontend"]
    cloud = handle.start()
    try:
        reach = playground.Reach.read()
        if reach.client_netns is None:
            print(cloud.servers_not_running)
            return
        with tempfile.TemporaryDirectory(prefix="kha-bench-") as tmp:
            project = playground.project_copy(Path(tmp) / "project")
            answers: list[float] = []
            names = [m["name"] for m in config["nodes"]["members"]]
            for i in range(runs):
                since = len(playground.hypervisor_log(cloud.run_folder))
                t0 = time.monotonic()
                playground.cdktf(project, "bench", config, "deploy")
                deployed = time.monotonic()
                first = playground.first_answer(reach.client_netns, vip, port, 600)
                got = playground.wait_booted(cloud.run_folder, names, since)
                boots = [f"{n} {s:.1f} s" for n, s in got.seconds.items()]
                if got.lock_wait > 0.5:
                    boots.append(f"{got.lock_wait:.1f} s waiting for the lab lock")
                t1 = time.monotonic()
                playground.cdktf(project, "bench", {**config, "allow_destroy": True}, "destroy")
                destroyed = time.monotonic() - t1
                if first is not None:
                    answers.append(first)
                print(
                    f"run {i + 1}: cdktf deploy {deployed - t0:.1f} s; the VIP's first answer "
                    f"{'none in 600' if first is None else f'{first:.1f}'} s after it returned "
                    f"(node boots: {', '.join(boots)}); cdktf destroy {destroyed:.1f} s; load {os.getloadavg()[0]:.1f}"
                )
            if len(answers) > 1:
                print(
                    f"first answer: median {statistics.median(answers):.1f} s "
                    f"(min {min(answers):.1f}, max {max(answers):.1f})"
                )
    finally:
        handle.stop(cloud)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--endpoint", action="store_true", help="deploy the example and time the VIP's first answer")
    args = parser.parse_args()
    if args.endpoint:
        endpoint(args.runs)
    else:
        measure(args.runs)


if __name__ == "__main__":
    main()
