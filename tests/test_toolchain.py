"""The two toolchains, cdktf (the default) and CDK Terrain (TOOLCHAIN=cdktn), synthesize the same stacks
from the same code: every variant's JSON equal but for the toolchain's own version in the metadata."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks import toolchain
from tests.conftest import ROOT
from tests.variants import VARIANTS

# The toolchains' versions as each writes them into `//.metadata.version`: the one difference allowed.
VERSIONS = {"cdktf": "0.20.12", "cdktn": "0.24.0"}


def _cdktn_missing() -> str | None:
    if importlib.util.find_spec("cdktn") is None:
        return "no cdktn Python package: `make setup-python`"
    if not (toolchain.BINDINGS / "imports" / "openstack" / "__init__.py").is_file():
        return "no cdktn OpenStack bindings: `make setup-cdktn`"
    return None


def _synth_all(name: str, outdir: Path) -> dict[int, dict[str, Any]]:
    env = {**os.environ, "TOOLCHAIN": name}
    done = subprocess.run(
        [sys.executable, "-m", "tests.toolchain_synth", str(outdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        n: json.loads(next((outdir / str(n) / "stacks").glob("*/cdk.tf.json")).read_text())
        for n in range(len(VARIANTS))
    }


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> dict[str, dict[int, dict[str, Any]]]:
    why = _cdktn_missing()
    if why:
        pytest.skip(why)
    return {name: _synth_all(name, tmp_path_factory.mktemp(name)) for name in VERSIONS}


@pytest.mark.parametrize("n", range(len(VARIANTS)), ids=list(VARIANTS))
def test_both_toolchains_synthesize_the_same_json_but_for_their_version(both, n):
    cdktf, cdktn = both["cdktf"][n], both["cdktn"][n]
    # Each JSON is its toolchain's: the import hook did swap cdktf for CDK Terrain.
    assert cdktf["//"]["metadata"]["version"] == VERSIONS["cdktf"]
    assert cdktn["//"]["metadata"]["version"] == VERSIONS["cdktn"]
    cdktn["//"]["metadata"]["version"] = VERSIONS["cdktf"]
    assert cdktn == cdktf


def test_an_unknown_toolchain_is_one_line_naming_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("TOOLCHAIN", "cdk")
    with pytest.raises(toolchain.ToolchainError) as err:
        toolchain.install()
    assert str(err.value) == "TOOLCHAIN: 'cdk' is not a toolchain this project runs; one of: cdktf, cdktn"


def test_cdktn_without_its_bindings_says_which_target_makes_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLCHAIN", "cdktn")
    monkeypatch.setattr(toolchain, "BINDINGS", tmp_path / "bindings")
    with pytest.raises(
        toolchain.ToolchainError,
        match=r"^TOOLCHAIN: 'cdktn' needs the OpenStack bindings in .*; run `make setup-cdktn`$",
    ):
        toolchain.install()


def test_main_py_refuses_an_unknown_toolchain_in_one_line():
    env = {**os.environ, "TOOLCHAIN": "cdk"}
    done = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (
        2,
        "error: TOOLCHAIN: 'cdk' is not a toolchain this project runs; one of: cdktf, cdktn\n",
    )
