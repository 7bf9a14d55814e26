"""Every attribute and block the JSON sets, held against the provider's own schema.

`terraform validate` stops at its first unsupported argument per resource; this walk names every
one, and counts what it checked, so a provider upgrade that drops or renames an attribute fails
with the attribute's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Terraform's meta-arguments, and cdktf's metadata key: not the provider's to define.
META_ARGUMENTS = frozenset(
    {"count", "depends_on", "for_each", "lifecycle", "provider", "provisioner", "connection", "//"}
)
SECTIONS = (("resource", "resource_schemas"), ("data", "data_source_schemas"))


@dataclass
class SchemaCheck:
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    resources: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _schema_for(schemas: dict[str, Any], section: str, type_name: str) -> dict[str, Any] | None:
    for provider in schemas.values():
        found = provider.get(section, {}).get(type_name)
        if found is not None:
            return found["block"]
    return None


def _walk(body: dict[str, Any], block: dict[str, Any], path: str, check: SchemaCheck, *, top: bool) -> None:
    attributes = block.get("attributes", {})
    blocks = block.get("block_types", {})
    for key, value in body.items():
        if top and key in META_ARGUMENTS:
            continue
        if key in attributes:
            check.checked += 1
            if attributes[key].get("computed") and not (
                attributes[key].get("optional") or attributes[key].get("required")
            ):
                check.problems.append(f"{path}.{key}: read-only in the provider's schema; it cannot be set")
        elif key in blocks:
            check.checked += 1
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    _walk(item, blocks[key]["block"], f"{path}.{key}[{i}]", check, top=False)
        else:
            known = ", ".join(sorted([*attributes, *blocks]))
            check.problems.append(f"{path}.{key}: not in the provider's schema (known here: {known})")


def check_schema(doc: dict[str, Any], schemas: dict[str, Any]) -> SchemaCheck:
    check = SchemaCheck()
    for kind, section in SECTIONS:
        for type_name, items in doc.get(kind, {}).items():
            block = _schema_for(schemas, section, type_name)
            prefix = "data." if kind == "data" else ""
            if block is None:
                check.problems.append(f"{prefix}{type_name}: no provider has this {kind} type")
                continue
            for name, body in items.items():
                check.resources += 1
                _walk(body, block, f"{prefix}{type_name}.{name}", check, top=True)
    for name, configs in doc.get("provider", {}).items():
        provider = next((p for addr, p in schemas.items() if addr.endswith(f"/{name}")), None)
        if provider is None:
            check.problems.append(f"provider.{name}: no such provider installed")
            continue
        for i, body in enumerate(configs if isinstance(configs, list) else [configs]):
            _walk(body, provider["provider"]["block"], f"provider.{name}[{i}]", check, top=True)
    return check
