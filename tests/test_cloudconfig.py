"""The cloud-config reader and editor: Terraform's escapes both ways, the text read back, and edits
that change one line and leave every other byte as synthesized."""

from __future__ import annotations

import pytest

from userdata import cloudconfig
from userdata.render import HAPROXY_CFG, KEEPALIVED_CONF, render_cloud_config

TEMPLATED = "#cloud-config\nwrite_files:\n  - path: /x\n    content: |\n      echo ${HOME} %{if}\n"


def test_escape_and_unescape_are_inverse_and_escaped_text_reads_as_literal():
    user_data = cloudconfig.escape(TEMPLATED)
    assert user_data != TEMPLATED and cloudconfig.unescape(user_data) == TEMPLATED
    assert cloudconfig.written_files(user_data)["/x"].content == "echo ${HOME} %{if}\n"


def test_an_unescaped_template_sequence_is_refused_naming_its_line():
    with pytest.raises(cloudconfig.CloudConfigError, match=r"^user_data line 5 still holds a Terraform template"):
        cloudconfig.load(TEMPLATED)


def test_dump_gives_back_what_load_reads():
    config = {"write_files": [{"path": "/x", "content": "a ${b} %{c}\n"}], "runcmd": [["docker", "run", "img"]]}
    user_data = cloudconfig.dump(config)
    assert user_data.startswith("#cloud-config\n") and "$${b}" in user_data and "%%{c}" in user_data
    assert cloudconfig.load(user_data) == config


def test_a_docker_run_edit_changes_that_line_alone(example_plan):
    before = render_cloud_config(example_plan, "demo-cp-1")
    after = cloudconfig.with_docker_run(before, "haproxy", lambda argv: [*argv[:-1], "haproxy:9"])
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and len(before.splitlines()) == len(after.splitlines())
    assert cloudconfig.docker_runs(after)["haproxy"].image == "haproxy:9"
    assert cloudconfig.docker_runs(after)["keepalived"] == cloudconfig.docker_runs(before)["keepalived"]


def test_a_docker_run_edit_that_changes_nothing_is_refused(example_plan):
    with pytest.raises(cloudconfig.CloudConfigError, match=r"^the haproxy line does not change"):
        cloudconfig.with_docker_run(render_cloud_config(example_plan, "demo-cp-1"), "haproxy", lambda argv: argv)


def test_a_file_line_edit_changes_that_file_alone(example_plan):
    before = render_cloud_config(example_plan, "demo-cp-1")
    after = cloudconfig.with_file_line(before, HAPROXY_CFG.host_path, "timeout client-fin 10s", "timeout client-fin 9s")
    old, new = cloudconfig.written_files(before), cloudconfig.written_files(after)
    assert [p for p in old if old[p] != new[p]] == [HAPROXY_CFG.host_path]
    assert "    timeout client-fin 9s\n" in new[HAPROXY_CFG.host_path].content


def test_a_file_line_edit_in_another_file_than_named_is_refused(example_plan):
    text = render_cloud_config(example_plan, "demo-cp-1")
    with pytest.raises(
        cloudconfig.CloudConfigError, match=r"is not in /etc/kubeadm-ha/keepalived/keepalived\.conf alone"
    ):
        cloudconfig.with_file_line(text, KEEPALIVED_CONF.host_path, "timeout client-fin 10s", "timeout client-fin 11s")
