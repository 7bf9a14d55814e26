"""One loopback cloud for every module that deploys with Terraform: starting it costs ~25 s (minutes
on a loaded machine), so the package shares one, and each module must leave it as it found it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloud import handle
from cloud.playground import Reach
from tfcheck.engine import engine
from tfcheck.terraform import binary

HERE = Path(__file__).resolve().parent

# Everything a deployment creates, by name, across projects (admin): what a module must remove again.
LEFTOVERS = """
n, c = conn.network, conn.compute
result = {
  'ports': sorted(p.name for p in n.ports()), 'security groups': sorted(g.name for g in n.security_groups()),
  'floating ips': sorted(f.floating_ip_address for f in n.ips()),
  'servers': sorted(s.name for s in c.servers(all_projects=True)),
  'server groups': sorted(g.name for g in c.server_groups(all_projects=True)),
}
"""


def leftovers(cloud: handle.Cloud) -> dict[str, list[str]]:
    return cloud.sdk(LEFTOVERS, admin=True)


# These delete the seeded image and flavor (the cloud cannot make an image again): they run last.
LAST = "test_cloud_day2.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = [i for i, item in enumerate(items) if item.path.parent == HERE]
    ours = [items[i] for i in here]
    for i, item in zip(here, sorted(ours, key=lambda item: item.path.name == LAST), strict=True):
        items[i] = item


@pytest.fixture(scope="package")
def shared_cloud():
    reason = handle.missing() or (
        None if binary().exists() and shutil.which(engine()) else f"no {engine()}: `make setup`"
    )
    if reason:
        pytest.skip(reason)
    with handle.running_cloud() as running:
        yield running


@pytest.fixture(scope="module")
def cloud(shared_cloud):
    before = leftovers(shared_cloud)
    yield shared_cloud
    after = leftovers(shared_cloud)
    assert after == before, f"the module left resources in the shared cloud: {after} (before: {before})"


@pytest.fixture(scope="module")
def reach(cloud) -> Reach:
    """cloud.json, where booted servers run (skipped with the cloud's own line saying why not)."""
    got = Reach.read()
    if got.client_netns is None:
        pytest.skip(cloud.servers_not_running)
    return got
