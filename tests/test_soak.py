"""The chaos soak without a lab: its schedule follows from the seed, and its invariants judge recordings."""

from __future__ import annotations

import itertools

import pytest

from lab.scenarios.soak import (
    Fault,
    Sample,
    availability,
    blame,
    check,
    groups,
    recovery,
    schedule,
    serviceable,
    split_brain,
)
from lab.world.client import Attempt

NODES = ["a", "b", "c"]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    assert schedule(7, 600, NODES) == schedule(7, 600, NODES)
    assert schedule(7, 600, NODES) != schedule(8, 600, NODES)


@pytest.mark.parametrize("seed", range(20))
def test_faults_overlap_only_on_different_nodes_and_leave_one_node_alone(seed):
    faults = schedule(seed, 600, NODES)
    for f, g in itertools.combinations(faults, 2):
        if f.node is not None and f.node == g.node:
            assert f.end <= g.start or g.end <= f.start, (f, g)
    for f in faults:
        busy = {g.node for g in faults if g.node is not None and g.start <= f.start < g.end}
        assert len(busy) <= len(NODES) - 1
    assert all(f.end <= 600 - 5 for f in faults)


def test_faults_do_overlap_on_different_nodes():
    overlapping = [
        (f, g)
        for seed in range(5)
        for f, g in itertools.combinations(schedule(seed, 600, NODES), 2)
        if f.node != g.node and f.start < g.end and g.start < f.end
    ]
    assert overlapping


def test_a_cut_node_is_a_group_of_its_own():
    faults = [Fault(1.0, 5.0, "cut", "a")]
    assert groups(faults, NODES, 2.0) == [{"a"}, {"b", "c"}]
    assert groups(faults, NODES, 6.0) == [{"a", "b", "c"}]


def test_the_service_is_owed_while_one_node_works_and_one_apiserver_is_healthy():
    no_apiserver = [
        Fault(0, 10, "cut", "a"),
        Fault(0, 10, "apiserver-stop", "b"),
        Fault(0, 10, "apiserver-unhealthy", "c"),
    ]
    assert not serviceable(no_apiserver, NODES, 5)  # b and c forward, but to no healthy apiserver
    assert serviceable(no_apiserver, NODES, 11)
    no_proxy = [Fault(0, 10, "cut", "a"), Fault(0, 10, "haproxy-crash", "b"), Fault(0, 10, "keepalived-crash", "c")]
    assert not serviceable(no_proxy, NODES, 5)
    assert serviceable(no_proxy[:2], NODES, 5)  # c forwards to its own and b's apiserver


def test_a_node_that_reaches_neither_peer_nor_gateway_owes_no_service():
    faults = [Fault(0, 10, "cut", "a"), Fault(0, 10, "power-off", "b"), Fault(2, 6, "gateway-down", None)]
    assert serviceable(faults, NODES, 1)  # c reaches the gateway: the survivor
    assert not serviceable(faults, NODES, 3)  # c reaches nothing: cut off by definition
    assert serviceable(faults[2:], NODES, 3)  # the gateway down alone changes nothing


def _samples(*spans: tuple[float, float, tuple[str, ...]]) -> list[Sample]:
    out = []
    for start, end, holders in spans:
        t = start
        while t < end:
            out.append(Sample(round(t, 2), holders))
            t += 0.05
    return out


def test_two_holders_that_reach_each_other_for_more_than_a_second_is_split_brain():
    long = _samples((0, 1, ("a",)), (1, 2.5, ("a", "b")), (2.5, 4, ("b",)))
    assert split_brain([], NODES, long).violations == 1
    short = _samples((0, 1, ("a",)), (1, 1.5, ("a", "b")), (1.5, 4, ("b",)))
    assert split_brain([], NODES, short).violations == 0
    cut = [Fault(0.5, 5, "cut", "a")]  # a's stale copy is in its own island
    assert split_brain(cut, NODES, long).violations == 0


def _attempts(start: float, end: float, ok: bool) -> list[Attempt]:
    n = round((end - start) / 0.02)
    return [
        Attempt(start + i * 0.02, start + i * 0.02 + 0.005, ok, "a" if ok else None, None if ok else "x")
        for i in range(n)
    ]


def test_availability_counts_only_attempts_made_while_the_service_is_owed():
    attempts = _attempts(0, 100, True) + _attempts(100, 101, False)
    assert availability([], NODES, attempts).violations == 1  # 98.0 %
    every_apiserver_down = [Fault(99.9, 101.5, "apiserver-stop", n) for n in NODES]
    verdict = availability(every_apiserver_down, NODES, attempts)
    assert verdict.violations == 0 and verdict.detail.startswith("100.00 %")


def test_recovery_wants_a_served_attempt_within_a_second_of_each_fault_end():
    fault = Fault(1.0, 3.0, "cut", "a")
    assert recovery([fault], NODES, _attempts(0, 3.5, False) + _attempts(3.5, 5, True)).violations == 0
    verdict = recovery([fault], NODES, _attempts(0, 4.5, False) + _attempts(4.5, 5, True))
    assert verdict.violations == 1 and "cut on a ending at 3.00 s" in verdict.detail


def test_a_failed_soak_names_its_seed_and_how_to_replay_it():
    report = check(41, [], NODES, _attempts(0, 10, True), _samples((0, 10, ("a",))), ["netns kha-n-a"])
    assert not report.ok
    text = report.format("python -m lab soak --seed 41 --minutes 2")
    assert "FAIL leaks" in text and "netns kha-n-a" in text
    assert text.endswith("FAILED (seed 41); replay: python -m lab soak --seed 41 --minutes 2")
    assert check(41, [], NODES, _attempts(0, 10, True), _samples((0, 10, ("a",))), []).format("x").endswith("PASSED")


def test_failed_attempts_are_blamed_on_the_latest_fault_before_them():
    faults = [Fault(1.0, 5.0, "cut", "a"), Fault(2.0, 2.1, "haproxy-crash", "b")]
    attempts = _attempts(1.5, 1.6, False) + _attempts(2.05, 2.15, False) + _attempts(9.0, 9.04, False)
    assert blame(faults, attempts) == {"cut": 5, "haproxy-crash": 5, "none": 2}
