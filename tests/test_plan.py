"""Failover arithmetic, proven on the rendered keepalived.conf: a node whose haproxy is down never wins."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import plan
from cluster.config import ALLOWED_NODE_COUNTS
from cluster.plan import effective_priority, make_plan
from tests.conftest import DELETE, config_from
from userdata.configs import parse_keepalived
from userdata.render import render_keepalived_conf, seconds


def keepalived_view(conf: str) -> tuple[int, int]:
    """(priority, weight of the haproxy check) as keepalived reads them from a rendered config."""
    (instance,) = parse_keepalived(conf).find("vrrp_instance")
    (script,) = [s for s in (instance.one("track_script").children or []) if s.keyword == "haproxy_ready"]
    assert script.args[0] == "weight", script.args
    return int(instance.value("priority")), int(script.args[1])


def views_for(count: int) -> list[tuple[int, int]]:
    plan = make_plan(config_from({"nodes.count": count, "nodes.members": DELETE}))
    addresses = {n.name: f"192.0.2.{20 + i}" for i, n in enumerate(plan.nodes)}
    return [keepalived_view(render_keepalived_conf(plan, n.name, addresses)) for n in plan.nodes]


VIEWS = {count: views_for(count) for count in ALLOWED_NODE_COUNTS}


def failed_ranks_below_healthy(views: list[tuple[int, int]], healthy: list[bool]) -> bool:
    ranks = [effective_priority(p, w, ok) for (p, w), ok in zip(views, healthy, strict=True)]
    live_healthy = [r for r, ok in zip(ranks, healthy, strict=True) if ok]
    assert None not in live_healthy, "a healthy node is never in FAULT"
    live_failed = [r for r, ok in zip(ranks, healthy, strict=True) if not ok and r is not None]
    return all(f < h for f in live_failed for h in live_healthy if h is not None)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_node_whose_haproxy_is_down_ranks_below_every_healthy_node(data):
    count = data.draw(st.sampled_from(ALLOWED_NODE_COUNTS))
    healthy = data.draw(st.lists(st.booleans(), min_size=count, max_size=count))
    assert failed_ranks_below_healthy(VIEWS[count], healthy)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_vip_ends_on_a_healthy_node_whenever_one_exists(data):
    count = data.draw(st.sampled_from(ALLOWED_NODE_COUNTS))
    healthy = data.draw(st.lists(st.booleans(), min_size=count, max_size=count).filter(any))
    ranks = [effective_priority(p, w, ok) for (p, w), ok in zip(VIEWS[count], healthy, strict=True)]
    winner = max((r, i) for i, r in enumerate(ranks) if r is not None)[1]
    assert healthy[winner]


def test_the_property_check_catches_unsound_arithmetic():
    # A weight that lowers a failed node by less than the gap between priorities: the holder
    # (150) with a failed check (145) still outranks a healthy 140. This is the class of bug the
    # property test exists for (keepalived #2599 with nopreempt makes it an outage).
    assert not failed_ranks_below_healthy([(150, -5), (140, -5), (130, -5)], [False, True, True])


@pytest.mark.parametrize("count", ALLOWED_NODE_COUNTS)
def test_priorities_are_distinct_and_valid_for_backups(count):
    priorities = [p for p, _ in VIEWS[count]]
    assert len(set(priorities)) == count
    assert all(1 <= p <= 254 for p in priorities)


def test_failed_check_puts_the_node_in_fault():
    # weight 0: a failing check means FAULT (VIP released, priority-0 advert), not a lower priority.
    assert {w for views in VIEWS.values() for _, w in views} == {0}
    plan = make_plan(config_from({}))
    (instance,) = parse_keepalived(render_keepalived_conf(plan, plan.nodes[0].name)).find("vrrp_instance")
    assert {tuple(s.args) for s in instance.one("track_script").children} == {("weight", "0")}


@pytest.mark.parametrize("count", ALLOWED_NODE_COUNTS)
def test_priorities_sit_near_the_top_so_a_backup_answers_a_release_within_milliseconds(count):
    # VRRPv3 skew time: (256 - priority) x advert_int / 256; advert_int is 0.1 s.
    assert all((256 - p) * 0.1 / 256 <= 0.005 for p, _ in VIEWS[count][:2])
    assert all((256 - p) * 0.1 / 256 <= 0.025 for p, _ in VIEWS[count])


def test_control_plane_endpoint_is_vip_and_frontend_port(example_plan):
    assert example_plan.control_plane_endpoint == "192.0.2.10:9443"


def test_vrid_from_config_wins_over_the_derived_one():
    assert make_plan(config_from({"vip.virtual_router_id": 77})).vrid == 77


def test_haproxys_open_files_limit_holds_two_descriptors_per_connection_and_headroom():
    # The official image runs haproxy as non-root: it cannot raise its limit past the container's.
    assert 2 * plan.HAPROXY_MAXCONN + plan.HAPROXY_FD_HEADROOM <= plan.HAPROXY_NOFILE


# --- the tunables the templates format ------------------------------------------------------------
def numeric_strings(values) -> list[str]:
    """The names whose value is a number written as text."""
    out = []
    for name, value in values.items():
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                continue
            out.append(name)
    return out


def test_the_templates_get_every_tunable_typed_numbers_as_numbers():
    assert numeric_strings(plan.TUNABLES) == []
    assert all(type(v) in (int, float, str) for v in plan.TUNABLES.values()), "no module, function or class"
    assert (plan.TUNABLES["ADVERT_INTERVAL"], plan.TUNABLES["REACH_DEADLINE_S"]) == (0.1, 0.8)


def test_a_number_written_as_text_is_caught():
    """Negative control of the check above."""
    assert numeric_strings({"ADVERT_INTERVAL": "0.1", "HEALTH_URI": "/haproxy-ready", "N": 3}) == ["ADVERT_INTERVAL"]


def test_seconds_are_formatted_as_the_daemons_take_them_and_text_is_refused():
    assert [seconds(v) for v in (0.1, 0.6, 0.8, 1, 600)] == ["0.1", "0.6", "0.8", "1", "600"]
    for wrong in ("0.1", True, -1):
        with pytest.raises(ValueError, match="not a duration in seconds"):
            seconds(wrong)
