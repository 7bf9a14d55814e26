"""Any input, one clean line per problem: every field walked with bad values, names and counts by hypothesis."""

from __future__ import annotations

import copy
import re
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cluster.config import ClusterConfig, ConfigError, parse_config
from cluster.plan import make_plan
from tests.conftest import DELETE, config_from, example_data, synth
from userdata.render import render_cloud_config

# pydantic's own wording (and its error dump): none of it may reach the user.
PYDANTIC = re.compile(
    r"Input should|String should|Input is not|should be a valid|should have at (least|most)|Value error|"
    r"Assertion failed|validation error|pydantic|type=|For further information|Field required|Extra inputs"
)
BAD_VALUES: tuple[Any, ...] = (
    None,
    "",
    "x",
    "Bad Value!",
    "2001:db8::1",
    "1.2.3.4/40",
    7,
    -1,
    70000,
    2.5,
    True,
    [],
    ["x"],
    {},
    {"k": 1},
    "a" * 70,
    "${x}",
)


def _leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every field of the model, into nested models and the first item of their lists."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        for inner, is_list in _models_in(field.annotation):
            out.extend(_leaves(inner, f"{path}.0." if is_list else f"{path}."))
    return out


def _models_in(annotation: Any) -> list[tuple[type[BaseModel], bool]]:
    found = []
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            found.append((arg, False))
        elif typing.get_origin(arg) is tuple:
            found.extend((inner, True) for inner, _ in _models_in(typing.get_args(arg)[0]))
    return found


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    *parents, last = dotted.split(".")
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = [{}] if part == "members" else {}
            node = node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


FIELDS = _leaves(ClusterConfig)


def test_the_walk_reaches_every_nested_field():
    assert {
        "name",
        "vip.address",
        "nodes.members.0.address",
        "state.use_lockfile",
        "network.subnet.cidr",
        "allow_destroy",
    } <= set(FIELDS)
    assert len(FIELDS) > 40


def test_the_pydantic_pattern_catches_pydantics_own_messages():
    """Negative control: the walk would see raw pydantic text if it leaked."""
    with pytest.raises(ValidationError) as err:
        ClusterConfig.model_validate(_set(example_data(), "ports.frontend", "x"))
    assert PYDANTIC.search(str(err.value))


def _problems(data: dict[str, Any]) -> list[str]:
    try:
        parse_config(data)
    except ConfigError as err:
        return err.problems
    return []


@pytest.mark.parametrize("field", FIELDS)
def test_every_field_refuses_bad_values_in_our_words(field):
    for value in BAD_VALUES:
        for line in _problems(_set(example_data(), field, value)):
            assert "\n" not in line
            assert not PYDANTIC.search(line), f"{field} = {value!r}: {line}"
            assert " — " in line or line.endswith("(top level)") or ": give exactly one" in line, line


def _display(field: str) -> str:
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", field)


@pytest.mark.parametrize("field", FIELDS)
def test_a_wrong_type_names_the_field(field):
    """A list where a scalar belongs, or the other way round: the line names that very field."""
    problems = _problems(_set(example_data(), field, [["nested"]]))
    assert any(p.startswith(_display(field)) for p in problems), problems


# --- names and counts, by hypothesis ----------------------------------------------------------

NAMES = st.text(alphabet="abcxyz019-_A. ", min_size=0, max_size=40)


def _members(name: str, count: int) -> list[dict[str, str]]:
    return [{"name": f"{name}-{i}", "address": f"192.0.2.{20 + i}"} for i in range(count)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, count=st.integers(min_value=-1, max_value=9), members=st.sampled_from(["none", "matching", "three"]))
def test_any_name_and_count_renders_or_is_refused_cleanly(name, count, members):
    data = example_data()
    data["name"] = name
    data["nodes"]["count"] = count
    if members == "none":
        del data["nodes"]["members"]
    else:
        data["nodes"]["members"] = _members(name, count if members == "matching" else 3)
    try:
        cfg = parse_config(data)
    except ConfigError as err:
        assert err.problems
        for line in err.problems:
            assert "\n" not in line and not PYDANTIC.search(line), line
        return
    plan = make_plan(cfg)
    addresses = {n.name: f"192.0.2.{30 + i}" for i, n in enumerate(plan.nodes)}
    for node in plan.nodes:
        assert re.fullmatch(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?", node.name)
        assert node.name in render_cloud_config(plan, node.name, addresses)


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"name": "a" * 27, "nodes.members": None, "nodes.count": 7}, [f"{'a' * 27}-cp-{i}" for i in range(1, 8)]),
        ({"name": "b" * 32}, ["demo-cp-1", "demo-cp-2", "demo-cp-3"]),
        ({"name": "c-0", "nodes.members": None}, ["c-0-cp-1", "c-0-cp-2", "c-0-cp-3"]),
    ],
    ids=["27-chars-7-nodes-no-members", "32-chars-members", "short"],
)
def test_boundary_names_synthesize(changes, names):
    data = example_data()
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition(".")
        target = data[section] if section else data
        if value is None:
            target.pop(key)
        else:
            target[key] = value
    doc = synth(parse_config(data))
    assert sorted(vm["name"] for vm in doc["resource"]["openstack_compute_instance_v2"].values()) == sorted(names)


def test_a_long_name_without_members_is_refused_before_anything_is_built():
    with pytest.raises(
        ConfigError, match=r"^invalid config:\n  - name: a{30} \(30 characters\) — at most 27 characters"
    ):
        config_from({"name": "a" * 30, "nodes.members": DELETE})
