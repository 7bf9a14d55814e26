"""The engine switch (ENGINE=terraform|tofu, tfcheck/engine.py) and the OpenTofu `make setup` builds from
tofu/go.mod: the version that go.mod pins is the one the binary prints, linked from .tools/bin."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ops import OpsError
from ops.inventory import terraform_node_addresses
from stacks.cluster_stack import REQUIRED_OPENTOFU_VERSION
from tests.conftest import ROOT
from tfcheck.engine import EngineError, engine

TOFU_GO_MOD = ROOT / "tofu" / "go.mod"
TOFU = ROOT / ".tools" / "bin" / "tofu"


def _pinned() -> str:
    found = re.search(r"^require github\.com/opentofu/opentofu v(\d+\.\d+\.\d+)$", TOFU_GO_MOD.read_text(), re.M)
    assert found, "tofu/go.mod: no `require github.com/opentofu/opentofu v<version>` line (the Makefile reads it)"
    return found.group(1)


def test_engine_defaults_to_terraform(monkeypatch):
    monkeypatch.delenv("ENGINE", raising=False)
    assert engine() == "terraform"
    monkeypatch.setenv("ENGINE", "")
    assert engine() == "terraform"


def test_an_unknown_engine_is_one_line_naming_the_variable_the_value_and_the_choices(monkeypatch):
    monkeypatch.setenv("ENGINE", "opentofu")
    with pytest.raises(EngineError) as err:
        engine()
    assert str(err.value) == "ENGINE: 'opentofu' is not an engine this project runs; one of: terraform, tofu"


def test_make_refuses_an_unknown_engine_or_toolchain_in_one_line():
    for variable, value, choices in (("ENGINE", "tf", "terraform, tofu"), ("TOOLCHAIN", "cdk", "cdktf, cdktn")):
        done = subprocess.run(
            ["make", "-n", "validate", f"{variable}={value}"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        line = rf"{variable}: '{value}' is not an? \w+ this project runs; one of: {choices}"
        assert re.fullmatch(rf"Makefile:\d+: \*\*\* {line}\.  Stop\.\n", done.stderr), done.stderr


def test_ops_reads_outputs_with_the_engine_chosen(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE", "tofu")
    calls: list[list[str]] = []

    def run(argv, **_):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, json.dumps({"demo-cp-1": "192.0.2.11"}), "")

    assert terraform_node_addresses(tmp_path, run=run) == {"demo-cp-1": "192.0.2.11"}
    assert calls == [["tofu", "output", "-no-color", "-json", "node_addresses"]]

    def missing(argv, **_):
        raise FileNotFoundError(argv[0])

    with pytest.raises(OpsError, match=r"^tofu: command not found; it reads the deployed stack's node_addresses$"):
        terraform_node_addresses(tmp_path, run=missing)


def test_tofu_go_mod_keeps_opentofus_own_replace_and_godebug_lines():
    """The wrapper builds OpenTofu as OpenTofu's go.mod does: its hcl fork and its godebug settings."""
    text = TOFU_GO_MOD.read_text()
    assert "replace github.com/hashicorp/hcl/v2 v2.20.1 => github.com/opentofu/hcl/v2 " in text
    assert re.search(r"godebug \(\n\ttlsmlkem=0\n\twinsymlink=0\n\)", text)
    own = Path.home() / "go" / "pkg" / "mod" / "cache" / "download" / "github.com" / "opentofu" / "opentofu" / "@v"
    upstream = own / f"v{_pinned()}.mod"
    if upstream.is_file():  # Go's module cache, where a build left it: the lines are OpenTofu's own
        replaces = [line for line in upstream.read_text().splitlines() if line.startswith("replace ")]
        assert replaces and all(line in text for line in replaces)


def test_the_pinned_opentofu_is_one_every_backend_of_the_stack_accepts():
    pinned = tuple(map(int, _pinned().split(".")))
    for backend, constraint in REQUIRED_OPENTOFU_VERSION.items():
        lowest = tuple(map(int, constraint.removeprefix(">= ").split(".")))
        assert pinned >= lowest, (backend, constraint)


def test_the_built_tofu_is_the_pinned_release_linked_from_tools_bin():
    if not TOFU.exists():
        pytest.skip("no .tools/bin/tofu: `make setup` (or make setup-tofu) builds it")
    assert TOFU.resolve() == (ROOT / ".tools" / "tofu" / f"v{_pinned()}" / "bin" / "tofu").resolve()
    done = subprocess.run([str(TOFU), "version"], capture_output=True, text=True, timeout=60, check=True)
    # A release build (version.dev=no): no "-dev" suffix.
    assert done.stdout.splitlines()[0] == f"OpenTofu v{_pinned()}"
