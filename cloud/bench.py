"""Figures for the cloud: seconds from start to `cloud ready`, and the memory of its processes.

`python -m cloud.bench [--runs N]` (project virtualenv). The first start after `make setup-cloud`
is the cold one (Python byte-code and the page cache not yet warm); later starts are warm.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from cloud import handle


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    measure(parser.parse_args().runs)


if __name__ == "__main__":
    main()
