"""The user's entry points: `python main.py` and `cdktf synth` fail cleanly on bad input and synthesize nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import EXAMPLE, ROOT, example_data, with_changes
from userdata.stack import read as read_stack


def run(cmd, tmp_path, config, **extra_env):
    env = {**os.environ, "CONFIG": str(config), "CHECKPOINT_DISABLE": "1", **extra_env}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def strip_metadata(value):
    """Drop cdktf's "//" construct-path comments, which differ between App and Testing synths."""
    if isinstance(value, dict):
        return {k: strip_metadata(v) for k, v in value.items() if k != "//"}
    if isinstance(value, list):
        return [strip_metadata(v) for v in value]
    return value


def bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_changes(example_data(), {"ports.frontend": 70000, "nodes.flavour": "x"})))
    return path


def test_main_rejects_bad_config_without_traceback_and_writes_nothing(tmp_path):
    result = run([sys.executable, str(ROOT / "main.py")], tmp_path, bad_config(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert lines[0] == "error: invalid config:"
    assert any("nodes.flavour: unknown key" in line for line in lines)
    assert any("ports.frontend: 70000 — must be at most 65535" in line for line in lines)
    assert not (tmp_path / "cdktf.out").exists()


def test_main_reports_a_missing_config_file(tmp_path):
    result = run([sys.executable, str(ROOT / "main.py")], tmp_path, tmp_path / "missing.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such file" in result.stderr


def test_main_synthesizes_the_example(tmp_path, example_json):
    result = run([sys.executable, str(ROOT / "main.py")], tmp_path, EXAMPLE)
    assert result.returncode == 0, result.stderr
    doc = read_stack(tmp_path / "cdktf.out" / "stacks" / "demo" / "cdk.tf.json")
    assert strip_metadata(doc["resource"]) == strip_metadata(example_json["resource"])
    assert "end-of-life" not in result.stderr


def test_cdktf_synth_rejects_bad_config_without_traceback(tmp_path):
    cdktf = shutil.which("cdktf", path=str(ROOT / "node_modules" / ".bin"))
    if cdktf is None:
        pytest.skip("cdktf CLI not installed: `make test` runs npm ci")
    for name in ("cdktf.json", "main.py", "Pipfile", "Pipfile.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("cluster", "stacks", "userdata"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The copy has no virtualenv of its own: `pipenv run` uses the project's, as an active one.
    result = run(
        [cdktf, "synth"], tmp_path, bad_config(tmp_path), VIRTUAL_ENV=str(ROOT / ".venv"), PIPENV_VENV_IN_PROJECT=""
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "nodes.flavour: unknown key" in output
    assert not (tmp_path / "cdktf.out" / "stacks").exists()


# --- make status / bin/ops: the tool's exit code ----------------------------------------------


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory):
    """The project in a temporary folder (its own cdktf.out), sharing the installed venv and node_modules."""
    if shutil.which("cdktf", path=str(ROOT / "node_modules" / ".bin")) is None or shutil.which("make") is None:
        pytest.skip("cdktf CLI or make missing: `make test` sets them up")
    copy = tmp_path_factory.mktemp("project")
    for name in ("Makefile", "cdktf.json", "main.py", "Pipfile", "Pipfile.lock", "package.json", "package-lock.json"):
        shutil.copy2(ROOT / name, copy / name)  # mtimes kept: make's setup stamps stay fresh
    for name in ("cluster", "stacks", "userdata", "ops", "bin", "config"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".venv", "node_modules", ".stamps"):
        (copy / name).symlink_to((ROOT / name).resolve())
    return copy


# ssh runs `false` instead of connecting: every node is unreachable, no packet leaves the machine.
UNREACHABLE = "--ssh-option ProxyCommand=false"


def test_bin_ops_status_exits_with_the_tools_code_for_an_unhealthy_cluster(project_copy):
    result = run([str(project_copy / "bin" / "ops"), "status", *UNREACHABLE.split()], project_copy, EXAMPLE)
    assert result.returncode == 1, result.stderr
    assert "demo-cp-1: unreachable over SSH" in result.stdout
    assert "cdk.tf.json" in result.stderr  # make's synth output goes to stderr ...
    assert result.stdout.startswith("NODE ")  # ... and only the tool's to stdout


def test_bin_ops_exits_2_when_the_tool_cannot_start(project_copy, tmp_path):
    result = run([str(project_copy / "bin" / "ops"), "status"], project_copy, bad_config(tmp_path))
    assert result.returncode == 2 and "nodes.flavour: unknown key" in result.stderr


def test_make_status_names_the_tools_exit_code(project_copy):
    result = run(["make", "--no-print-directory", "status", f"ARGS={UNREACHABLE}"], project_copy, EXAMPLE)
    assert result.returncode == 2  # make's own code for any failed recipe
    assert "python -m ops status exited 1 (make exits 2 on any failure; bin/ops status keeps the code)" in result.stderr
