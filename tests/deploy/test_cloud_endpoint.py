"""One chain from `cdktf deploy` to a VIP that answers: the servers the loopback cloud boots run as
lab nodes (`lab.hypervisor`), on a network whose port security, security groups and floating IPs
are what the real Neutron holds; the client and the operator reach them from the namespaces
`.stamps/cloud/cloud.json` names.

The example is deployed once for the module (a copy of the project, as a fresh clone has it); the
tests play on it in order (the VIP, `ops status`, a failover drill, a day-2 client CIDR, a node
replaced) and the last one destroys it. They skip, naming why, where booted servers do not run
(not root: the cloud's `booted servers will not run` line).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cloud import launcher, paths, playground
from cloud.playground import Reach
from lab.world import tenant
from tests.conftest import example_data, with_changes

pytestmark = [pytest.mark.cloud, pytest.mark.lab]

NAME = "play"
CONFIG = with_changes(example_data(), {"name": NAME})
SERVE_WITHIN_S = 240  # a deadline for a loaded machine, not a figure: `python -m cloud.bench --endpoint` measures
REPORT: list[str] = []


@pytest.fixture(scope="module")
def deployed(reach, cloud, tmp_path_factory):
    """The example deployed with `cdktf deploy`; destroyed at the end if a test has not done it."""
    project = playground.project_copy(tmp_path_factory.mktemp("play") / "project")
    state = {"project": project, "config": CONFIG, "destroyed": False}
    since = len(playground.hypervisor_log(cloud.run_folder))
    playground.cdktf(project, NAME, CONFIG, "deploy")
    state["returned"] = time.monotonic()
    # What the plan knows, from the stack's outputs: the VIP, its port and the nodes' addresses.
    outputs = playground.outputs(project / "cdktf.out" / "stacks" / NAME)
    host, _, port = outputs["control_plane_endpoint"].rpartition(":")
    assert host == outputs["vip"]
    state.update(vip=host, port=int(port), addresses=outputs["node_addresses"])
    # Another lab on the machine holds the lab lock for as long as it runs: the boots wait for it.
    state["boots"] = playground.wait_booted(cloud.run_folder, list(outputs["node_addresses"]), since)
    yield state
    if not state["destroyed"]:
        playground.cdktf(project, NAME, {**state["config"], "allow_destroy": True}, "destroy")
    print("\n".join(REPORT))


def stack_json(state: dict) -> Path:
    return state["project"] / "cdktf.out" / "stacks" / NAME / "cdk.tf.json"


def holders(reach: Reach, state: dict) -> list[str]:
    """The nodes whose NIC holds the VIP, as each node itself says over SSH."""
    out = []
    for name, address in state["addresses"].items():
        done = playground.ssh(reach, address, f"ip -4 -o addr show dev {tenant.NIC}")
        assert done.returncode == 0, f"ssh {name}: {done.stderr}"
        if re.search(rf"\binet {re.escape(state['vip'])}/", done.stdout):
            out.append(name)
    return out


def status(reach: Reach, state: dict, *args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    stack = playground.as_nodes_run_it(stack_json(state))
    return playground.ops(reach, state["project"], NAME, stack, "status", *args, ns=ns)


def test_cloud_json_names_the_namespaces_and_the_seeded_key_pairs_private_key(reach, cloud):
    assert sorted(json.loads(paths.CLOUD_JSON.read_text())) == [
        "admin_netns",
        "client_netns",
        "cloud",
        "clouds_yaml",
        "ssh_key",
    ]
    assert (reach.cloud, reach.clouds_yaml) == (paths.CLOUD, str(paths.CLOUDS_YAML))
    assert {reach.client_netns, reach.admin_netns} <= set(tenant.leftovers())
    assert f"client namespace: {reach.client_netns}" in "\n".join(cloud.lines)
    public = subprocess.run(["ssh-keygen", "-y", "-f", reach.ssh_key], capture_output=True, text=True, check=True)
    seeded = cloud.sdk("result = conn.compute.find_keypair('demo-admin').public_key")
    assert public.stdout.split()[:2] == seeded.split()[:2]


def test_the_vip_answers_readyz_from_the_client_namespace_after_cdktf_deploy(reach, deployed):
    took = playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], SERVE_WITHIN_S)
    assert took is not None, f"the VIP {deployed['vip']}:{deployed['port']} did not answer within {SERVE_WITHIN_S} s"
    since_deploy = time.monotonic() - deployed["returned"]
    waited = deployed["boots"].lock_wait
    REPORT.append(
        f"report: first answer from the VIP {since_deploy:.1f} s after cdktf deploy returned"
        + (f" ({waited:.1f} s of it waiting for the lab lock: another lab ran)" if waited > 0.5 else "")
    )
    assert (playground.readyz(reach.client_netns, deployed["vip"], deployed["port"]) or "").startswith("ok")


def test_neutrons_rules_keep_out_a_source_outside_client_cidrs(reach, deployed):
    """The negative control: the admin namespace (198.51.100.0/24, not in access.client_cidrs) is
    refused at the VIP's frontend port by the security group as Neutron holds it."""
    assert playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], SERVE_WITHIN_S) is not None
    assert playground.readyz(reach.admin_netns, deployed["vip"], deployed["port"]) is None


def test_ops_status_over_ssh_from_the_admin_namespace_is_healthy(reach, deployed):
    assert playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], SERVE_WITHIN_S) is not None
    deadline = time.monotonic() + 60
    while (done := status(reach, deployed, "--json")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(2)  # the apiservers' health checks settle a few seconds after the VIP answers
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    for name in deployed["addresses"]:
        assert name in text
    assert len(holders(reach, deployed)) == 1


def test_ops_status_from_the_client_namespace_cannot_log_in(reach, deployed):
    """The negative control: SSH is admitted from access.admin_cidrs only."""
    done = status(reach, deployed, ns=reach.client_netns)
    assert done.returncode != 0
    assert "ssh" in (done.stdout + done.stderr).lower()


def test_killing_the_holders_haproxy_moves_the_vip_and_it_serves_on(reach, deployed):
    assert playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], SERVE_WITHIN_S) is not None
    [before] = holders(reach, deployed)
    killed = playground.ssh(reach, deployed["addresses"][before], "sudo docker kill haproxy")
    assert killed.returncode == 0, killed.stderr
    try:
        deadline = time.monotonic() + 30
        while (now := holders(reach, deployed)) in ([before], []) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(now) == 1 and now != [before], f"the VIP stayed on {before} ({now})"
        assert playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], 10) is not None
    finally:
        playground.ssh(reach, deployed["addresses"][before], "sudo docker start haproxy")


def test_a_day2_client_cidr_lets_that_client_in_and_changes_nothing_else(reach, deployed, cloud):
    external = json.loads((cloud.run_folder / "hypervisor-ready.json").read_text())["client_external"]
    assert playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], SERVE_WITHIN_S) is not None
    assert (
        playground.readyz(reach.client_netns, deployed["vip"], deployed["port"], source=external) is None
    )  # not yet admitted
    servers = cloud.sdk("result = sorted(s.id for s in conn.compute.servers())")
    changed = with_changes(CONFIG, {"access.client_cidrs": [*CONFIG["access"]["client_cidrs"], f"{external}/32"]})
    done = playground.cdktf(deployed["project"], NAME, changed, "deploy")
    deployed["config"] = changed
    assert "1 added, 0 changed, 0 destroyed" in done.stdout
    assert (
        playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], 15, source=external) is not None
    )
    assert cloud.sdk("result = sorted(s.id for s in conn.compute.servers())") == servers


def test_server_stop_start_and_reboot_power_the_node_off_and_on(reach, deployed, cloud):
    assert playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], SERVE_WITHIN_S) is not None
    [holder] = holders(reach, deployed)
    name = next(n for n in deployed["addresses"] if n != holder)
    address = deployed["addresses"][name]
    server = f"conn.compute.find_server({name!r})"

    def reaches() -> bool:
        return playground.ssh(reach, address, "sudo docker ps --format '{{.Names}}'", timeout=20).returncode == 0

    def until(want: bool, within: float = 60) -> bool:
        deadline = time.monotonic() + within
        while reaches() != want:
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        return True

    assert reaches()
    cloud.sdk(f"conn.compute.stop_server({server}); result = 1")
    assert until(False), f"{name} still answers SSH after os-stop"
    assert playground.readyz(reach.client_netns, deployed["vip"], deployed["port"]) is not None
    cloud.sdk(f"conn.compute.start_server({server}); result = 1")
    assert until(True), f"{name} did not come back after os-start"
    running = playground.ssh(reach, address, "sudo docker ps --format '{{.Names}}'").stdout.split()
    assert sorted(running) == ["haproxy", "keepalived"]  # started again by their restart policy
    started = "sudo docker inspect --format '{{.State.StartedAt}}' keepalived"
    before = playground.ssh(reach, address, started).stdout
    cloud.sdk(f"conn.compute.reboot_server({server}, 'HARD'); result = 1")
    deadline = time.monotonic() + 60
    while (after := playground.ssh(reach, address, started)).returncode != 0 or after.stdout == before:
        assert time.monotonic() < deadline, f"{name}'s keepalived was not started anew by a reboot"
        time.sleep(1)
    assert holders(reach, deployed) == [holder]


def test_a_replaced_node_joins_the_vrrp_group_and_the_vip_never_stops_serving(reach, deployed, cloud):
    assert playground.first_answer(reach.client_netns, deployed["vip"], deployed["port"], SERVE_WITHIN_S) is not None
    [holder] = holders(reach, deployed)
    victim = next(n for n in deployed["addresses"] if n != holder)
    config = {**deployed["config"], "allow_destroy": True}
    playground.cdktf(deployed["project"], NAME, config, "synth")
    stack = stack_json(deployed).parent
    assert playground.terraform(stack, "init", "-input=false").returncode == 0
    resource = next(
        f"openstack_compute_instance_v2.{k}"
        for k, v in json.loads((stack / "cdk.tf.json").read_text())["resource"]["openstack_compute_instance_v2"].items()
        if v["name"] == victim
    )
    before = cloud.sdk(f"result = conn.compute.find_server({victim!r}).id")
    failures: list[str] = []
    probes = [0]
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            probes[0] += 1
            if playground.readyz(reach.client_netns, deployed["vip"], deployed["port"], timeout=2) is None:
                failures.append(time.strftime("%H:%M:%S"))
            time.sleep(0.2)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        done = playground.terraform(stack, "apply", "-auto-approve", "-input=false", f"-replace={resource}")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        after = cloud.sdk(f"result = conn.compute.find_server({victim!r}).id")
        assert after != before
        deadline = time.monotonic() + SERVE_WITHIN_S
        joined = None
        while joined is None and time.monotonic() < deadline:
            log = playground.ssh(reach, deployed["addresses"][victim], "sudo docker logs keepalived 2>&1 | tail -50")
            joined = re.search(r"Entering BACKUP STATE", log.stdout) if log.returncode == 0 else None
            time.sleep(2)
        assert joined, f"{victim} (replaced) did not enter BACKUP state"
        time.sleep(5)
    finally:
        stop.set()
        prober.join()
    REPORT.append(f"report: {probes[0]} probes of the VIP during the replacement of {victim}, {len(failures)} failed")
    assert failures == [], f"the VIP did not answer at {failures} during the replacement"
    assert holders(reach, deployed) == [holder]


def test_cdktf_destroy_leaves_no_node_namespace_engine_or_process(reach, deployed, cloud):
    playground.cdktf(deployed["project"], NAME, {**deployed["config"], "allow_destroy": True}, "destroy")
    deployed["destroyed"] = True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_nodes() or _node_dirs()):
        time.sleep(1)  # Nova's delete returns at once; the VM goes after
    assert _nodes() == []
    assert _node_dirs() == []
    engines = [
        p
        for p in Path("/proc").glob("[0-9]*")
        if _cmdline(p).startswith("dockerd") and tenant.WORKDIR_PREFIX in _cmdline(p)
    ]
    assert engines == []


def test_booted_servers_do_not_run_without_root(monkeypatch):
    """Bad input: not root. The cloud still serves the API; one line says why servers will not run."""
    monkeypatch.setattr(launcher.os, "geteuid", lambda: 1000)
    assert launcher.servers_cannot_run() == "not root, so no network namespaces"


def test_a_second_cloud_on_the_machine_does_not_run_servers(monkeypatch, tmp_path):
    """Two clouds' hypervisors would share the khc- names: the second one's servers do not run."""
    if os.geteuid() != 0:
        pytest.skip("not root: no cloud runs servers here")
    monkeypatch.setattr(paths, "HYPERVISOR_LOCK", tmp_path / "hypervisor.lock")
    assert launcher.servers_cannot_run() is None  # the negative control: nobody holds it
    with open(paths.HYPERVISOR_LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert launcher.servers_cannot_run() == (
            f"another cloud on this machine runs its servers (it holds {tmp_path / 'hypervisor.lock'})"
        )


def _nodes() -> list[str]:
    return [ns for ns in tenant.leftovers() if ns.startswith(tenant.PREFIX + "n-")]


def _node_dirs() -> list[Path]:
    return [p for w in Path("/tmp").glob(tenant.WORKDIR_PREFIX + "*") for p in w.iterdir()]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
