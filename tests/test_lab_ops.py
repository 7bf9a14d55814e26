"""The operator's tool in the lab: `python -m ops` from the admin namespace, over SSH (a real
OpenSSH server on every node, the security group's SSH rule emulated), rolling and reading nodes
that run the synthesized userdata under the open-loop client.

Behaviour only: what changed, which node the roll stops at, how often the VIP moved, what the
client saw fail, what status finds. Timings are `python -m lab.bench`'s.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from lab.scenarios import operate
from lab.scenarios.operate import HAPROXY_CFG_PATH, broken_haproxy_cfg, config_change, default_config, five_nodes
from lab.world import synth, topology
from lab.world.harness import Lab, synthesize, synthesize_config
from ops import Exit
from tests.test_lab import _assert_nothing_left, _missing


@pytest.fixture(scope="module")
def real_doc() -> dict:
    if reason := _missing():
        pytest.skip(reason)
    for binary in ("sshd", "ssh", "ssh-keygen", "sudo", "useradd"):
        if not any(Path(d, binary).exists() for d in ("/usr/sbin", "/usr/bin")):
            pytest.skip(f"the lab's SSH needs the {binary} binary (openssh-server, openssh-client, sudo)")
    return synth.load(synthesize())


# The five-node lab runs before the shared three-node one exists (one lab at a time).
@pytest.mark.lab
def test_a_five_node_cluster_rolls_a_config_change_with_no_failed_request(real_doc, tmp_path):
    config, stack = synthesize_config(five_nodes(yaml.safe_load(default_config().read_text())), tmp_path / "five")
    doc = synth.load(stack)
    with Lab(doc) as lab:
        op = lab.operator(config)
        r = operate.config_roll(lab, op, lab.write_stack(config_change(doc), "five-config"))
    assert (r.returncode, r.nodes, r.failed, r.vip_moves, r.status_after) == (0, 5, 0, 0, 0), r.output
    assert sorted(r.changed) == sorted(n.name for n in synth.parse(doc).nodes)
    assert r.output.count("config-only") == 5
    _assert_nothing_left(doc)


class Rolled:
    """The shared lab, its operator and the JSON its nodes run now (the drills roll it around)."""

    def __init__(self, lab: Lab, config: Path, doc: dict):
        self.lab = lab
        self.op = lab.operator(config)
        self.base = lab.stack_json
        self.doc = doc
        self.current = lab.stack_json

    def variant(self, doc: dict, name: str) -> Path:
        return self.lab.write_stack(doc, name)


@pytest.fixture(scope="module")
def rolled(real_doc):
    with Lab(real_doc) as lab:
        lab.wait_steady()
        yield Rolled(lab, default_config(), real_doc)


@pytest.mark.lab
def test_status_from_the_admin_network_finds_the_lab_healthy(rolled):
    run = rolled.op.run("status", rolled.current)
    assert run.returncode == 0, run.output
    assert "healthy: one VIP holder, every node as its userdata says" in run.stdout
    assert run.stdout.count(" ok ") == len(rolled.lab.nodes)


@pytest.mark.lab
def test_ssh_from_outside_the_admin_cidrs_is_dropped_by_the_security_group(rolled):
    node = next(iter(rolled.lab.nodes.values()))
    done = subprocess.run(
        topology.in_ns(
            topology.CLIENT_NS,
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=2",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-i",
                str(rolled.lab.keys.identity),
                f"ubuntu@{node.address}",
                "true",
            ],
        ),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 255 and "Connection timed out" in done.stderr, done.stderr


@pytest.mark.lab
def test_a_config_only_roll_reloads_every_node_without_a_failed_request_or_a_vip_move(rolled):
    r = operate.config_roll(rolled.lab, rolled.op, rolled.variant(config_change(rolled.doc), "config"))
    assert r.returncode == 0, r.output
    assert (r.failed, r.vip_moves, r.holder_after) == (0, 0, r.holder_before)
    assert sorted(r.changed) == sorted(rolled.lab.nodes)
    assert r.status_after == 0, "no drift after the roll"
    assert "recreate" not in r.output and r.output.count("config-only: reload haproxy, reload keepalived") == len(
        rolled.lab.nodes
    )
    rolled.current = rolled.variant(config_change(rolled.doc), "config")


@pytest.mark.lab
def test_a_haproxy_cfg_that_does_not_parse_is_refused_before_any_node_changes(rolled):
    r = operate.refused_roll(
        rolled.lab, rolled.op, rolled.variant(broken_haproxy_cfg(rolled.doc), "broken"), rolled.current
    )
    assert r.returncode == Exit.STOPPED and "validation failed, no node was changed" in r.message
    assert (r.changed, r.failed, r.vip_moves, r.status_after) == ([], 0, 0, 0)
    for node in rolled.lab.nodes:
        assert f"{node}: {HAPROXY_CFG_PATH}: haproxy -c in " in r.message
    assert "[ALERT]" in r.message and "clientfin" in r.message, "haproxy's own error"


@pytest.mark.lab
def test_a_node_unreachable_mid_roll_stops_the_roll_there_and_leaves_later_nodes_untouched(rolled):
    target = rolled.base if rolled.current != rolled.base else rolled.variant(config_change(rolled.doc), "config")
    r = operate.unreachable_mid_roll(rolled.lab, rolled.op, target)
    order = r.order
    assert r.returncode == Exit.STOPPED and r.changed == [order[0]], (r.changed, r.output)
    assert f"{order[1]}: unreachable over SSH before its change" in r.message
    assert f"not rolled: {', '.join(order[2:])}" in r.message
    assert r.failed == 0
    again = operate.roll(rolled.lab, rolled.op, "roll-resume", target)
    assert again.returncode == 0 and sorted(again.changed) == sorted(order[1:]), "a second roll finishes the rest"
    assert again.status_after == 0
    rolled.current = target


@pytest.mark.lab
def test_an_image_roll_recreates_every_container_and_moves_the_vip_exactly_once(rolled):
    target = rolled.variant(operate.image_change(rolled.lab, rolled.op.config, rolled.lab.workdir / "images"), "images")
    r = operate.image_roll(rolled.lab, rolled.op, target)
    assert r.returncode == 0, r.output
    assert (r.vip_moves, r.holders_at_end, r.failed_outside_handover) == (1, 1, 0)
    assert r.holder_after != r.holder_before
    assert r.status_after == 0
    assert r.output.count("image change") >= len(rolled.lab.nodes)
    assert f"{r.holder_before}: handing the VIP over" in r.output
    rolled.current = target


@pytest.mark.lab
@pytest.mark.parametrize("scenario", list(operate.SCENARIOS))
def test_status_reports_each_fault_with_its_finding_and_a_non_zero_exit(rolled, scenario):
    r = operate.status_drill(rolled.lab, rolled.op, rolled.current, scenario)
    assert r.returncode == 1 and r.missing == [], r.findings
    assert r.unexpected == [], r.findings
    assert r.healthy_after == 0, "status exits 0 once the fault is put right"
