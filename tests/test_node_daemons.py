"""The rendered files run for real on one node: keepalived's notify script keeps the state file,
haproxy serves its stats and both metrics endpoints, and a renamed config is what a reload reads.

One node in a throw-away network namespace, Debian's haproxy and keepalived run natively with
every file mounted where its container reads it. Alone with its gateway, the node becomes MASTER;
stopping haproxy puts it in FAULT; stopping keepalived writes STOP.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from csv import DictReader
from pathlib import Path

import pytest

from cluster.plan import CHECK_FAILED_MARK, CHECK_HOLD_MS, CHECK_HOLDS, KEEPALIVED_METRICS_URI, METRICS_URI, STATS_URI
from tests.tools import in_mount_namespace, node_netns, placed, require
from userdata.render import (
    CHECK_SCRIPT,
    HAPROXY_CFG,
    HAPROXY_DIR,
    KEEPALIVED_CONF,
    KEEPALIVED_METRICS,
    STATE_DIR,
    STATE_FILE,
    render_node_files,
)

pytestmark = pytest.mark.tools

NODE = "demo-cp-1"
ADDRESS = "192.0.2.11"


def wait_for(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class BareNode:
    """The node's daemons as plain processes (no Docker), in a namespace of their own."""

    def __init__(self, ns: str, folders: dict[str, Path], mounts: str, plan) -> None:
        self.ns, self.folders, self.mounts, self.plan = ns, folders, mounts, plan
        self.state_dir = folders[STATE_DIR]
        self.procs: dict[str, subprocess.Popen] = {}

    def command(self, command: str) -> list[str]:
        """argv that runs `command` on the node: its network namespace, its files where the containers see them."""
        return ["ip", "netns", "exec", self.ns, *in_mount_namespace(self.mounts, command)]

    def start(self, name: str, command: str) -> None:
        self.procs[name] = subprocess.Popen(
            self.command(command),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start_haproxy(self) -> None:
        # -n: the config's maxconn needs more descriptors than this machine's hard limit allows.
        self.start("haproxy", f"haproxy -W -db -n 4000 -f {HAPROXY_CFG.container_path}")

    def start_keepalived(self) -> None:
        self.start("keepalived", f"keepalived --dont-fork --log-console -f {KEEPALIVED_CONF.container_path}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=10)

    def state(self) -> dict[str, str]:
        path = self.state_dir / Path(STATE_FILE).name
        if not path.exists():
            return {}
        return dict(line.split("=", 1) for line in path.read_text().splitlines())

    def curl(self, url: str) -> str:
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns, "curl", "--silent", "--show-error", "--max-time", "2", url],
            capture_output=True,
            text=True,
        )
        return result.stdout if result.returncode == 0 else ""

    def status(self, url: str) -> str:
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                "curl",
                "--silent",
                "--max-time",
                "2",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code}",
                url,
            ],
            capture_output=True,
            text=True,
        )
        return result.stdout

    def process_start_time(self) -> str | None:
        metrics = self.curl(f"http://127.0.0.1:{self.plan.health_port}{METRICS_URI}")
        return next(
            (
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("haproxy_process_start_time_seconds")
            ),
            None,
        )

    def keepalived_metrics(self) -> str:
        return self.curl(f"http://{ADDRESS}:{self.plan.metrics_port}{KEEPALIVED_METRICS_URI}")


@pytest.fixture
def node(example_plan):
    require("haproxy", "keepalived", "curl")
    files = render_node_files(example_plan, NODE)
    Path(CHECK_FAILED_MARK).unlink(missing_ok=True)  # the check script's mark lives in /tmp, here the host's
    # Alone but for its gateway: a node that reaches nothing at all would go to FAULT (cut off).
    with node_netns(example_plan.interface, ADDRESS, example_plan.gateway) as ns, placed(files) as (folders, mounts):
        running = BareNode(ns, folders, mounts, example_plan)
        try:
            yield running
        finally:
            for name in list(running.procs):
                running.stop(name, signal.SIGKILL)
            Path(CHECK_FAILED_MARK).unlink(missing_ok=True)


def test_notify_script_keeps_the_state_and_metrics_follow_it(node, example_plan):
    node.start_haproxy()
    wait_for("haproxy", lambda: node.curl(f"http://127.0.0.1:{example_plan.health_port}/haproxy-ready"))
    node.start_keepalived()
    state = wait_for("MASTER", lambda: node.state().get("state") == "MASTER" and node.state())
    assert state["instance"] == example_plan.instance_name
    assert state["priority"] == str(example_plan.node(NODE).priority)
    assert abs(int(state["since"]) - time.time()) < 30

    metrics = wait_for(
        "VIP held",
        lambda: 'kubeadm_ha_vip_held{vip="192.0.2.10"} 1' in node.keepalived_metrics() and node.keepalived_metrics(),
    )
    assert f'kubeadm_ha_keepalived_state{{vrrp_instance="{example_plan.instance_name}",state="MASTER"}} 1' in metrics
    assert f'kubeadm_ha_keepalived_state{{vrrp_instance="{example_plan.instance_name}",state="FAULT"}} 0' in metrics
    assert "kubeadm_ha_keepalived_state_since_seconds" in metrics

    node.stop("haproxy")
    wait_for("FAULT", lambda: node.state().get("state") == "FAULT")
    node.start_haproxy()
    wait_for("MASTER again", lambda: node.state().get("state") == "MASTER")

    node.stop("keepalived")
    assert node.state()["state"] == "STOP"
    assert 'kubeadm_ha_vip_held{vip="192.0.2.10"} 0' in node.keepalived_metrics()


def test_haproxy_shows_every_apiserver_and_its_last_check_on_loopback_only(node, example_plan):
    node.start_haproxy()
    url = f"http://127.0.0.1:{example_plan.health_port}{STATS_URI};csv"

    def apiservers():
        rows = DictReader(io.StringIO(node.curl(url).removeprefix("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "kube-apiserver" and r["type"] == "2"}

    # No apiserver listens here: every check fails at layer 4 and each server goes DOWN.
    servers = wait_for(
        "all DOWN", lambda: (s := apiservers()) and all(r["status"] == "DOWN" for r in s.values()) and s, 30
    )
    assert set(servers) == {n.name for n in example_plan.nodes}
    for row in servers.values():
        assert row["check_status"].removeprefix("* ").startswith(("L4", "L6", "L7", "SOCKERR")), row
        assert row["check_status"] != "L7OK" and "last_chk" in row, row
    assert node.status(f"http://{ADDRESS}:{example_plan.health_port}{STATS_URI}") == "000"  # loopback only
    assert node.curl(f"http://{ADDRESS}:{example_plan.health_port}{STATS_URI};csv") == ""
    promex = node.curl(f"http://127.0.0.1:{example_plan.health_port}{METRICS_URI}")
    assert "haproxy_process_start_time_seconds" in promex


def test_metrics_frontend_serves_the_exporter_and_nothing_else_on_the_node_address(node, example_plan):
    node.start_haproxy()
    base = f"http://{ADDRESS}:{example_plan.metrics_port}"
    promex = wait_for("exporter", lambda: node.curl(base + METRICS_URI))
    assert 'haproxy_server_status{proxy="kube-apiserver",server="demo-cp-2"' in promex
    assert "kubeadm_ha_keepalived_state{" in node.keepalived_metrics()
    assert 'state="UNKNOWN"} 1' in node.keepalived_metrics()  # keepalived has not run yet
    assert node.status(base + STATS_URI) == "404"


@pytest.mark.parametrize(("mount", "reload_sees_new_file"), [("folder", True), ("single file", False)])
def test_a_reload_reads_a_config_replaced_by_rename_only_through_a_folder_mount(
    node, example_plan, mount, reload_sees_new_file
):
    """The roll writes a new file and renames it over the old one; a single-file mount pins the old inode."""
    host_dir = node.folders[HAPROXY_DIR.container]
    host_cfg = host_dir / HAPROXY_CFG.key
    if mount == "single file":  # how the userdata mounted haproxy.cfg before: the control that must fail
        node.mounts += f" && umount {HAPROXY_DIR.container}"
        for name in (HAPROXY_CFG.key, KEEPALIVED_METRICS.key):
            target = f"{HAPROXY_DIR.container}/{name}"
            node.mounts += f" && touch {target} && mount --bind {host_dir / name} {target}"
    node.start_haproxy()
    stats = f"http://127.0.0.1:{example_plan.health_port}{STATS_URI};csv"
    wait_for("stats", lambda: "demo-cp-3" in node.curl(stats))
    started = node.process_start_time()
    time.sleep(1.1)  # the start time has a resolution of a second

    new = host_cfg.with_name(".haproxy.cfg.new")
    new.write_text(host_cfg.read_text().replace("server demo-cp-3 ", "server demo-cp-3-renamed "))
    new.chmod(0o644)
    new.rename(host_cfg)
    os.kill(node.procs["haproxy"].pid, signal.SIGUSR2)  # the master-worker reload the roll sends
    # How the roll knows a reload took effect: the serving process's start time changes.
    wait_for("the reload", lambda: node.process_start_time() not in (None, started))

    answer = wait_for("stats after the reload", lambda: node.curl(stats))
    assert ("demo-cp-3-renamed" in answer) == reload_sees_new_file, answer


def test_the_haproxy_check_fails_when_haproxy_dies_during_its_held_request(node, example_plan):
    """The check's one request is held by haproxy: haproxy's death ends it with an empty reply
    (curl 52), not at a later poll; a live haproxy answers it (0). Other requests are not held."""
    node.start_haproxy()
    wait_for("haproxy", lambda: node.curl(f"http://127.0.0.1:{example_plan.health_port}/haproxy-ready"))
    check = node.command(f"sh {CHECK_SCRIPT.container_path}")
    assert subprocess.run(check, timeout=10).returncode == 0
    running = subprocess.Popen(check)
    time.sleep(0.3)  # inside the run's held requests (the second one)
    assert node.curl(f"http://127.0.0.1:{example_plan.health_port}{STATS_URI};csv"), "stats are answered meanwhile"
    node.stop("haproxy", signal.SIGKILL)
    assert running.wait(timeout=10) == 52


def test_the_haproxy_check_fails_within_one_hold_of_a_graceful_stop(node, example_plan):
    """docker stop sends haproxy SIGUSR1: a graceful stop closes the listeners but lets the open
    held request finish with 200. The run's next request is refused, so the check fails within
    one hold, not at keepalived's next run."""
    node.start_haproxy()
    wait_for("haproxy", lambda: node.curl(f"http://127.0.0.1:{example_plan.health_port}/haproxy-ready"))
    check = node.command(f"sh {CHECK_SCRIPT.container_path}")
    running = subprocess.Popen(check)
    time.sleep(0.1)
    stopped = time.monotonic()
    os.killpg(node.procs["haproxy"].pid, signal.SIGUSR1)
    assert running.wait(timeout=10) != 0
    assert time.monotonic() - stopped < CHECK_HOLD_MS / 1000 + 0.2, "seen at the next held request, not the next run"


def test_after_a_failed_check_the_next_run_passes_as_soon_as_haproxy_serves_again(node, example_plan):
    """A failed run leaves a mark; the next run polls with unheld requests, so keepalived learns
    that haproxy is back within a poll instead of up to a second later. Then the held request
    watches haproxy again."""
    check = node.command(f"sh {CHECK_SCRIPT.container_path}")
    assert subprocess.run(check, timeout=10).returncode != 0, "no haproxy: the check fails"
    assert Path(CHECK_FAILED_MARK).exists()
    started = time.monotonic()
    running = subprocess.Popen(check)
    time.sleep(0.3)
    node.start_haproxy()
    assert running.wait(timeout=10) == 0
    assert time.monotonic() - started < 0.85, "the recovery run ends when haproxy answers, not after a held request"
    assert not Path(CHECK_FAILED_MARK).exists()
    started = time.monotonic()
    assert subprocess.run(check, timeout=10).returncode == 0
    assert time.monotonic() - started >= CHECK_HOLDS * CHECK_HOLD_MS / 1000 - 0.05, (
        "the next run is the held requests again"
    )
