"""`cdktf deploy` and `cdktf destroy` themselves, as a user runs them, against the loopback cloud; in
between, CDK Terrain's `cdktn diff` on the same state plans no change (a team moving from cdktf to
cdktn, docs/toolchain.md). Under ENGINE=tofu both CLIs run OpenTofu.

The project is copied to a folder of its own (its tools linked), so the deploy's local state
(`terraform.<cluster>.tfstate`, next to cdktf.json) and its cdktf.out never touch this checkout.
The result is read back through the OpenStack API, not from our JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cloud import playground
from cloud.playground import project_copy
from stacks import toolchain
from tests.conftest import DELETE, ROOT, example_data, with_changes
from tfcheck.engine import engine
from tfcheck.terraform import version
from tfcheck.text import plain_lines

pytestmark = pytest.mark.cloud

CLUSTER = "cdk"
# The example under another name, with Neutron's addresses (no members) and a floating IP.
CHANGES = {"name": CLUSTER, "nodes.members": DELETE, "vip.floating_ip_pool": "public"}


def cdktf(
    project: Path, config: dict, *args: str, cli: str = "cdktf", flags: tuple[str, ...] = ("--auto-approve",)
) -> subprocess.CompletedProcess[str]:
    """`cdktf ARGS` in `project`, or CDK Terrain's `cdktn ARGS` (with TOOLCHAIN=cdktn) when `cli` says so."""
    return playground.cdktf(project, CLUSTER, config, *args, cli=cli, flags=flags)


def deployed(cloud) -> dict:
    return cloud.sdk(
        f"""
n, c = conn.network, conn.compute
ports = {{p.name: [i['ip_address'] for i in p.fixed_ips] for p in n.ports() if p.name.startswith('{CLUSTER}-')}}
servers = sorted(s.name for s in c.servers(all_projects=True) if s.name.startswith('{CLUSTER}-'))
vip = n.find_port('{CLUSTER}-vip')
fips = [[vip is not None and f.port_id == vip.id, f.floating_ip_address] for f in n.ips()]
sg = bool(n.find_security_group('{CLUSTER}-control-plane'))
result = {{'ports': ports, 'servers': servers, 'fips': fips, 'sg': sg}}
""",
        admin=True,
    )


def _cdktn_missing() -> str | None:
    if not (ROOT / ".tools" / "cdktn" / "cli" / "node_modules" / ".bin" / "cdktn").exists():
        return "no cdktn CLI: `make setup-cdktn`"
    if not (toolchain.BINDINGS / "imports" / "openstack" / "__init__.py").is_file():
        return "no cdktn OpenStack bindings: `make setup-cdktn`"
    return None


def test_cdktf_deploy_builds_the_cluster_cdktn_plans_no_change_and_cdktf_destroy_removes_it(cloud, tmp_path):
    project = project_copy(tmp_path / "project")
    config = with_changes(example_data(), CHANGES)

    cdktf(project, config, "deploy")
    got = deployed(cloud)
    nodes = [f"{CLUSTER}-cp-{i}" for i in (1, 2, 3)]
    assert got["servers"] == nodes
    assert sorted(got["ports"]) == sorted([f"{n}-port" for n in nodes] + [f"{CLUSTER}-vip"])
    assert got["ports"][f"{CLUSTER}-vip"] == [config["vip"]["address"]]
    assert [f[0] for f in got["fips"]] == [True] and got["sg"]
    # The stack's outputs, as `cdktf output` gives them, match what Neutron allocated.
    stack = project / "cdktf.out" / "stacks" / CLUSTER
    out = subprocess.run(
        [engine(), "output", "-json", "-no-color"], cwd=stack, capture_output=True, text=True, check=True
    ).stdout
    outputs = {k: v["value"] for k, v in json.loads(out).items()}
    assert {n: [a] for n, a in outputs["node_addresses"].items()} == {n: got["ports"][f"{n}-port"] for n in nodes}
    assert outputs["floating_ip"] == got["fips"][0][1]
    assert (project / f"terraform.{CLUSTER}.tfstate").is_file() and not (ROOT / f"terraform.{CLUSTER}.tfstate").exists()

    # The team moves to CDK Terrain: same code, same config, same state; its plan changes nothing.
    state = (project / f"terraform.{CLUSTER}.tfstate").read_text()
    # cdktf ran the engine ENGINE names (TERRAFORM_BINARY_NAME): the state says which version wrote it.
    assert json.loads(state)["terraform_version"] == version()["terraform_version"]
    try:
        if why := _cdktn_missing():
            print(f"cdktn skipped: {why}")  # the cdktf half still runs; test_toolchain.py says why cdktn is absent
        else:
            diff = " ".join(plain_lines(cdktf(project, config, "diff", cli="cdktn", flags=()).stdout))
            assert "No changes. Your infrastructure matches the configuration." in diff, diff[-3000:]
            assert (project / f"terraform.{CLUSTER}.tfstate").read_text() == state
    finally:
        config["allow_destroy"] = True  # the planned teardown: prevent_destroy lifted for this one run
        cdktf(project, config, "destroy")
    after = deployed(cloud)
    assert after == {"ports": {}, "servers": [], "fips": [], "sg": False}
