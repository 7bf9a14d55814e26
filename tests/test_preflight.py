"""Preflight without a cloud: where the cloud's settings come from (as the provider finds them), and the
checks that need no real fault: Neutron's extensions and the user_data's size. The faults a cloud can
make for real are in tests/deploy/test_cloud_preflight.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.plan import make_plan
from ops import preflight
from ops.openstack import CloudError, Session, cloud_settings
from tests.conftest import config_from, synth
from userdata.stack import INSTANCE, SynthesizedStack


def clouds_yaml(folder: Path, name: str = "mycloud") -> Path:
    path = folder / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": {name: {"auth": {"auth_url": "http://keystone:5000/v3"}}}}))
    return path


def test_a_relative_client_config_file_is_refused_naming_the_path_and_the_fix(tmp_path):
    with pytest.raises(CloudError) as err:
        cloud_settings({"OS_CLOUD": "mycloud", "OS_CLIENT_CONFIG_FILE": ".stamps/cloud/clouds.yaml"}, tmp_path)
    assert str(err.value) == (
        f"OS_CLIENT_CONFIG_FILE: .stamps/cloud/clouds.yaml — a relative path; Terraform runs in {tmp_path}, "
        "where it does not resolve: make it absolute, e.g. OS_CLIENT_CONFIG_FILE=$PWD/.stamps/cloud/clouds.yaml"
    )


def test_an_absolute_client_config_file_is_read(tmp_path):
    path = clouds_yaml(tmp_path)
    source, entry = cloud_settings({"OS_CLOUD": "mycloud", "OS_CLIENT_CONFIG_FILE": str(path)}, Path("/"))
    assert source == f"{path} (cloud mycloud)" and entry["auth"]["auth_url"] == "http://keystone:5000/v3"


def test_clouds_yaml_is_looked_for_in_terraforms_folder_then_the_users(tmp_path):
    stack_dir, home = tmp_path / "stack", tmp_path / "home"
    (home / ".config" / "openstack").mkdir(parents=True)
    stack_dir.mkdir()
    clouds_yaml(home / ".config" / "openstack")
    env = {"OS_CLOUD": "mycloud", "HOME": str(home)}
    assert cloud_settings(env, stack_dir)[0].startswith(str(home))
    clouds_yaml(stack_dir)
    assert cloud_settings(env, stack_dir)[0].startswith(str(stack_dir))


def test_an_unknown_cloud_name_lists_the_ones_there_are(tmp_path):
    path = clouds_yaml(tmp_path)
    with pytest.raises(CloudError, match=r"^OS_CLOUD: other — no such cloud in .*clouds.yaml \(it has: mycloud\)$"):
        cloud_settings({"OS_CLOUD": "other", "OS_CLIENT_CONFIG_FILE": str(path)}, tmp_path)


def test_no_clouds_yaml_names_every_place_looked_at(tmp_path):
    with pytest.raises(CloudError, match=r"^no clouds.yaml found; looked at .*stack/clouds.yaml, "):
        cloud_settings({"OS_CLOUD": "x", "HOME": str(tmp_path)}, tmp_path / "stack")


def test_without_os_cloud_the_os_variables_describe_the_cloud(tmp_path):
    source, entry = cloud_settings({"OS_AUTH_URL": "http://k/v3", "OS_USERNAME": "u"}, tmp_path)
    assert source == "the OS_* environment variables" and entry["auth"]["username"] == "u"
    with pytest.raises(CloudError, match="^OS_CLOUD: not set"):
        cloud_settings({}, tmp_path)


class FakeCloud(Session):
    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__("token", "project", frozenset({"member"}), {})
        self.answers = answers

    def get(self, service: str, path: str, **params: str) -> Any:
        return self.answers[path]


def pf(stack: SynthesizedStack | None = None, cloud: FakeCloud | None = None) -> preflight.Preflight:
    cfg = config_from()
    return preflight.Preflight(cfg, make_plan(cfg), stack or SynthesizedStack(synth(cfg)), cloud or FakeCloud({}))


def test_a_missing_extension_is_a_problem_and_both_present_are_none():
    both = [{"alias": "port-security"}, {"alias": "allowed-address-pairs"}, {"alias": "router"}]
    assert list(preflight.check_extensions(pf(cloud=FakeCloud({"/extensions": {"extensions": both}})))) == []
    one = FakeCloud({"/extensions": {"extensions": both[1:]}})
    (problem,) = preflight.check_extensions(pf(cloud=one))
    assert problem.message.startswith("network: port-security — Neutron does not offer this extension")


def test_user_data_over_novas_limit_is_a_problem_and_the_examples_is_not():
    cfg = config_from()
    doc = synth(cfg)
    assert list(preflight.check_user_data(pf(SynthesizedStack(doc)))) == []
    first = next(iter(doc["resource"][INSTANCE].values()))
    first["user_data"] += "#" * 50_000
    (problem,) = preflight.check_user_data(pf(SynthesizedStack(doc)))
    assert problem.field == "nodes (demo-cp-1)" and "Nova takes at most 65535" in problem.message


def test_every_check_is_listed_once_and_runs_in_order():
    assert list(preflight.CHECKS)[:2] == ["network", "subnet"]  # the others read what these two find
    assert len(set(preflight.CHECKS.values())) == len(preflight.CHECKS)
