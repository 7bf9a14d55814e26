"""Boot drills in the lab: a node provisioned again by cloud-init while its registry refuses pulls
(lab/scenarios/boot.py). Refused twice, the boot script's back-off gets the image and the node comes
up; refused for good, cloud-init's runcmd fails and `ops status` names the node and the image; the
same node with its images at hand is healthy again (the negative control)."""

from __future__ import annotations

import json

import pytest

from lab.scenarios import boot
from lab.scenarios.operate import default_config
from lab.world import synth
from lab.world.harness import Lab, synthesize
from tests.test_lab import _missing


@pytest.fixture(scope="module")
def booted():
    if reason := _missing():
        pytest.skip(reason)
    with Lab(synth.load(synthesize())) as lab:
        lab.wait_steady()
        yield lab, lab.operator(default_config())


def a_backup(lab: Lab) -> str:
    return next(name for name in reversed(list(lab.nodes)) if name not in lab.holders())


@pytest.mark.lab
def test_a_node_whose_pulls_are_refused_twice_comes_up_healthy(booted):
    lab, op = booted
    r = boot.registry_refuses(lab, op, a_backup(lab), refusals=2)
    assert r.cloud_init_error is None and r.pulls == 3
    assert r.status.returncode == 0, r.status.output
    assert json.loads(r.status.stdout)["findings"] == []


@pytest.mark.lab
def test_a_node_whose_pulls_never_succeed_fails_cloud_init_and_status_names_the_node_and_the_image(booted):
    lab, op = booted
    name = a_backup(lab)
    r = boot.registry_refuses(lab, op, name, refusals=None)
    assert r.cloud_init_error is not None and "runcmd" in r.cloud_init_error, r.cloud_init_error
    assert r.pulls >= 3
    assert r.status.returncode == 1
    findings = json.loads(r.status.stdout)["findings"]
    assert any(f.startswith(f"{name}: first boot failed: docker pull {r.image} failed ") for f in findings), findings
    assert f"{name}: container haproxy does not exist" in findings
    after = boot.restore(lab, op, name)
    assert after.returncode == 0 and json.loads(after.stdout)["findings"] == [], after.output
