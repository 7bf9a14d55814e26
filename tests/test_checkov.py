"""checkov on the synthesized JSON: 0 failed checks for the example, and it does fail an unsafe stack."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, config_from, synth

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"


def checkov(doc, tmp_path):
    if not CHECKOV.exists():
        pytest.skip("checkov not installed: `make test` installs it into .tools/checkov")
    # checkov 3.2.505's terraform_json parser takes every key of the `terraform` block for a nested
    # block and raises on a string ("this method receives only dicts"), so it cannot read
    # `required_version`; that key holds no security setting: it is left out for checkov alone.
    doc = {**doc, "terraform": {k: v for k, v in doc["terraform"].items() if k != "required_version"}}
    stack = tmp_path / "cdk.tf.json"
    stack.write_text(json.dumps(doc, indent=2))
    result = subprocess.run(
        [
            str(CHECKOV),
            "--file",
            str(stack),
            "--framework",
            "terraform_json",
            "secrets",
            "--skip-download",
            "--quiet",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [c["check_id"] for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(r["summary"]["passed"] for r in reports)
    return passed, failed


@pytest.mark.tools
def test_checkov_finds_nothing_in_the_example(example_json, tmp_path):
    passed, failed = checkov(example_json, tmp_path)
    assert failed == []
    assert passed >= 10


@pytest.mark.tools
def test_checkov_fails_a_stack_that_opens_ssh_to_the_internet(tmp_path):
    doc = synth(config_from({"access.admin_cidrs": ["0.0.0.0/0"], "access.allow_ssh_from_anywhere": True}))
    _, failed = checkov(doc, tmp_path)
    assert "CKV_OPENSTACK_2" in failed


@pytest.mark.tools
def test_checkov_finds_nothing_in_a_stack_with_remote_state(tmp_path):
    state = {
        "backend": "s3",
        "bucket": "kha-state",
        "region": "RegionOne",
        "endpoint": "https://object.example.org",
        "use_path_style": True,
    }
    passed, failed = checkov(synth(config_from({"state": state})), tmp_path)
    assert failed == []
    assert passed >= 10
