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
    for name in ("cluster", "stacks", "userdata", "ops", "tfcheck", "bin", "config"):
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


# --- make synth: what a new user sees ------------------------------------------------------------

NOISE = ("[ERROR]", "checkpoint", "DeprecationWarning", "ENOTFOUND")


def test_make_synth_prints_no_error_no_checkpoint_lookup_and_no_deprecation(project_copy):
    result = run(["make", "--no-print-directory", "synth"], project_copy, EXAMPLE)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert [n for n in NOISE if n in output] == [], output
    assert output.rstrip().endswith("cdktf.out/stacks/demo/cdk.tf.json")


def test_make_synth_prints_each_problem_once_and_every_problem_of_the_file(project_copy, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(with_changes(example_data(), {"nodes.count": 4, "vip.address": "10.0.0.1"})))
    result = run(["make", "--no-print-directory", "synth"], project_copy, config)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    count = f"  - {config}: nodes.count: 4 — allowed: 3, 5, 7"
    vip = f"  - {config}: vip.address: 10.0.0.1 — must be inside network.subnet.cidr 192.0.2.0/24"
    assert [line for line in output.splitlines() if line.startswith("  - ")] == [
        line for line in output.splitlines() if line.startswith((count, vip))
    ]
    assert output.count(count) == 1 and output.count(vip) == 1
    assert "non-zero exit code" not in output and "Traceback" not in output


def test_make_synth_keeps_each_stacks_terraform_folder_and_drops_a_stale_stack(project_copy):
    kept = project_copy / "cdktf.out" / "stacks" / "demo" / ".terraform" / "providers"
    kept.mkdir(parents=True, exist_ok=True)
    stale = project_copy / "cdktf.out" / "stacks" / "gone" / "cdk.tf.json"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("{}")
    result = run(["make", "--no-print-directory", "synth"], project_copy, EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert kept.is_dir() and not stale.exists()
