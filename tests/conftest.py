"""Shared fixtures: the shipped example, configs varied from it, and stacks synthesized in-process."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

# jsii starts Node and ops starts Terraform: the project's own ones, as under `make`.
ROOT = Path(__file__).resolve().parent.parent
os.environ["PATH"] = os.pathsep.join(
    [str(ROOT / ".tools" / "bin"), str(ROOT / "node_modules" / ".bin"), os.environ.get("PATH", "")]
)
os.environ["TF_CLI_CONFIG_FILE"] = str(ROOT / ".stamps" / "terraformrc")
os.environ["TF_CLI_ARGS_providers_lock"] = f"-fs-mirror={ROOT / '.tools' / 'providers'}"  # as the Makefile says why
os.environ.setdefault("NODE_OPTIONS", "--no-deprecation")

from stacks.toolchain import install  # noqa: E402

install()  # TOOLCHAIN=cdktn: every test below imports CDK Terrain and the generated bindings

from cluster.config import ClusterConfig, parse_config  # noqa: E402
from cluster.plan import Plan, make_plan  # noqa: E402

EXAMPLE = ROOT / "config" / "example.yaml"


def example_data() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def with_changes(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `data` with dotted-path changes applied; a value of DELETE removes the key."""
    out = copy.deepcopy(data)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is DELETE:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return out


DELETE = object()


def config_from(changes: dict[str, Any] | None = None) -> ClusterConfig:
    return parse_config(with_changes(example_data(), changes or {}))


@pytest.fixture(scope="session")
def example_config() -> ClusterConfig:
    return config_from()


@pytest.fixture(scope="session")
def example_plan(example_config: ClusterConfig) -> Plan:
    return make_plan(example_config)


def synth(config: ClusterConfig) -> dict[str, Any]:
    """Synthesize one cluster's stack in-process and return its Terraform JSON."""
    from cdktf import Testing as CdktfTesting

    from stacks.cluster_stack import ClusterStack

    stack = ClusterStack(CdktfTesting.app(), config.name, plan=make_plan(config))
    return json.loads(CdktfTesting.synth(stack))


@pytest.fixture(scope="session")
def example_json(example_config: ClusterConfig) -> dict[str, Any]:
    return synth(example_config)


def resources(doc: dict[str, Any], resource_class: Any) -> dict[str, dict[str, Any]]:
    """The synthesized resources of one provider class, by Terraform name."""
    return doc.get("resource", {}).get(resource_class.TF_RESOURCE_TYPE, {})
