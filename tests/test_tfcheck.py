"""The schema walk of `make validate`, on a schema small enough to read: no Terraform needed."""

from __future__ import annotations

from tfcheck.schema import check_schema
from tfcheck.text import meaningful_lines

SCHEMAS = {
    "registry.terraform.io/x/demo": {
        "provider": {"block": {"attributes": {"region": {"optional": True}}}},
        "resource_schemas": {
            "demo_port": {
                "block": {
                    "attributes": {"name": {"optional": True}, "id": {"computed": True}},
                    "block_types": {"fixed_ip": {"block": {"attributes": {"ip_address": {"optional": True}}}}},
                }
            }
        },
    }
}


def test_nested_blocks_and_meta_arguments_are_walked_and_counted():
    doc = {
        "resource": {
            "demo_port": {"a": {"name": "a", "fixed_ip": [{"ip_address": "192.0.2.1"}], "depends_on": ["x"], "//": {}}}
        }
    }
    check = check_schema(doc, SCHEMAS)
    assert check.problems == [] and (check.checked, check.resources) == (3, 1)


def test_names_every_unknown_attribute_with_its_path_even_inside_a_block():
    doc = {"resource": {"demo_port": {"a": {"nmae": "a", "fixed_ip": [{"ip_adress": "192.0.2.1"}]}}}}
    problems = check_schema(doc, SCHEMAS).problems
    assert [p.split(":")[0] for p in problems] == ["demo_port.a.nmae", "demo_port.a.fixed_ip[0].ip_adress"]
    assert "known here: fixed_ip, id, name" in problems[0]


def test_a_read_only_attribute_an_unknown_type_and_an_unknown_provider_setting_are_problems():
    doc = {
        "resource": {"demo_port": {"a": {"id": "x"}}, "demo_volume": {"v": {}}},
        "provider": {"demo": [{"regoin": "x"}]},
    }
    problems = check_schema(doc, SCHEMAS).problems
    assert problems == [
        "demo_port.a.id: read-only in the provider's schema; it cannot be set",
        "demo_volume: no provider has this resource type",
        "provider.demo[0].regoin: not in the provider's schema (known here: region)",
    ]


def test_terraforms_box_and_colours_are_stripped_from_its_messages():
    text = "\x1b[31m╷\x1b[0m\n\x1b[31m│\x1b[0m \x1b[1mError: \x1b[0mNo outputs found\n\x1b[31m╵\x1b[0m\n"
    assert meaningful_lines(text) == ["Error: No outputs found"]
