"""Every rendered file for every node passes the real tools, and the cloud-config carries exactly those files."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from cluster import plan
from cluster.config import ALLOWED_NODE_COUNTS
from cluster.plan import make_plan
from tests.conftest import DELETE, config_from
from tests.tools import cloud_init_schema, haproxy_check, keepalived_check, require
from userdata.cloudconfig import load as load_cloud_config
from userdata.cloudconfig import parse_docker_run
from userdata.configs import global_maxconn, parse_keepalived, script_arguments, vrrp_instance
from userdata.render import (
    BOOT_SCRIPT,
    CHECK_SCRIPT,
    CONTAINER_FILES,
    CONTAINERS,
    HAPROXY_CFG,
    HAPROXY_CONTAINER,
    HAPROXY_DIR,
    KEEPALIVED_CONF,
    KEEPALIVED_DIR,
    NETWORK_SCRIPT,
    NOTIFY_SCRIPT,
    RUN_LABEL,
    STATE_DIR,
    container_commands,
    kubeadm_files,
    render_boot_script,
    render_cloud_config,
    render_node_files,
)

NODE_NAMES = ["demo-cp-1", "demo-cp-2", "demo-cp-3"]


@pytest.fixture(scope="module")
def files(example_plan):
    return {name: render_node_files(example_plan, name) for name in NODE_NAMES}


@pytest.mark.tools
@pytest.mark.parametrize("node", NODE_NAMES)
def test_haproxy_accepts_each_nodes_config(files, node):
    result = haproxy_check(files[node])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout
    assert "[WARNING]" not in result.stdout + result.stderr


@pytest.mark.tools
@pytest.mark.parametrize("node", NODE_NAMES)
def test_keepalived_accepts_each_nodes_config_without_a_warning(files, example_plan, node):
    problems = keepalived_check(files[node], example_plan.interface)
    assert problems == []


@pytest.mark.tools
def test_keepalived_check_is_able_to_fail(files, example_plan):
    broken = files["demo-cp-1"][KEEPALIVED_CONF.key].replace("advert_int 0.1", "advert_int 0.1x")
    assert keepalived_check({**files["demo-cp-1"], KEEPALIVED_CONF.key: broken}, example_plan.interface)


@pytest.mark.tools
@pytest.mark.parametrize("node", NODE_NAMES)
def test_cloud_init_accepts_each_nodes_cloud_config(example_plan, node):
    result = cloud_init_schema(render_cloud_config(example_plan, node))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@pytest.mark.parametrize("node", NODE_NAMES)
def test_cloud_config_carries_exactly_the_rendered_files(example_plan, files, node):
    text = render_cloud_config(example_plan, node)
    assert text.startswith("#cloud-config\n")
    doc = load_cloud_config(text)
    written = {f["path"]: f for f in doc["write_files"]}
    kubeadm = {f["host_path"]: f for f in kubeadm_files(example_plan, node)}
    assert set(written) == {f.host_path for f in CONTAINER_FILES} | set(kubeadm) | {BOOT_SCRIPT}
    for path, spec in kubeadm.items():
        assert (written[path]["content"], written[path]["owner"]) == (spec["content"], "root:root")
    boot = written[BOOT_SCRIPT]
    assert (boot["content"], boot["owner"], boot["permissions"]) == (render_boot_script(), "root:root", "0755")
    for spec in CONTAINER_FILES:
        entry = written[spec.host_path]
        assert entry["content"] == files[node][spec.key]
        assert (entry["owner"], entry["permissions"]) == (spec.owner, spec.permissions)


@pytest.mark.parametrize("script", [CHECK_SCRIPT, NETWORK_SCRIPT, NOTIFY_SCRIPT], ids=lambda s: s.key)
def test_scripts_are_root_owned_and_not_writable_by_others(script):
    assert script.owner == "root:root"
    assert int(script.permissions, 8) & 0o022 == 0


@pytest.mark.parametrize("script", [CHECK_SCRIPT, NETWORK_SCRIPT, NOTIFY_SCRIPT], ids=lambda s: s.key)
def test_scripts_are_valid_posix_shell(files, script):
    import subprocess

    result = subprocess.run(["sh", "-n"], input=files["demo-cp-1"][script.key], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_keepalived_runs_the_notify_script_as_root_for_every_state_change(files):
    conf = files["demo-cp-1"][KEEPALIVED_CONF.key]
    assert f'notify "{NOTIFY_SCRIPT.container_path}" root' in conf
    assert f'script "{CHECK_SCRIPT.container_path}"' in conf  # the check stays with script_user nobody


def test_notify_script_renames_a_complete_state_file_into_place(files):
    script = files["demo-cp-1"][NOTIFY_SCRIPT.key]
    assert script.startswith("#!/bin/sh\n")
    assert f'tmp="{STATE_DIR}/.keepalived.state.$$"' in script
    assert f'mv -f "$tmp" "{STATE_DIR}/keepalived.state"' in script


def test_a_node_that_reaches_neither_the_gateway_nor_a_peer_goes_to_fault(files):
    for name, node_files in files.items():
        conf = node_files[KEEPALIVED_CONF.key]
        instance = vrrp_instance(conf)
        assert script_arguments(conf, NETWORK_SCRIPT.container_path) == ("192.0.2.1", *instance.peers)
        (vrrp,) = parse_keepalived(conf).find("vrrp_instance")
        weights = {c.keyword: c.args for c in vrrp.one("track_script").children}
        assert weights["network_reachable"] == ["weight", "0"], name
        (script,) = [s for s in parse_keepalived(conf).find("vrrp_script") if s.args == ["network_reachable"]]
        assert script.value("user") == "root"  # ping's raw socket; script_user nobody has no NET_RAW


def _run_network_check(script: str, targets: list[str], shell: str, before: str = "") -> int:
    """Exit status of the network check, run by `shell` in a throw-away namespace where 10.77.0.1
    is the namespace's own address (it answers) and 10.77.0.9 is nobody (no ARP reply)."""
    setup = (
        "ip link set lo up && ip link add kha-a type veth peer name kha-b && "
        "ip addr add 10.77.0.1/24 dev kha-a && ip link set kha-a up && ip link set kha-b up && "
        f'{before}{shell} -c "$0" check {" ".join(targets)}'
    )
    done = subprocess.run(["unshare", "--net", "sh", "-c", setup, script], capture_output=True, text=True, timeout=30)
    return done.returncode


def _network_check_in(files, shell: str, tmp_path: Path) -> str:
    """The rendered network check, as `shell` runs it (busybox's ping for busybox's sh)."""
    require("ping", "ip", "unshare", *shell.split()[:1])
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    script = files["demo-cp-1"][NETWORK_SCRIPT.key]
    if shell.startswith("busybox"):
        # The osixia image's sh and ping are busybox's: whole-second -W, no fractional waits.
        (tmp_path / "ping").write_text('#!/bin/sh\nexec busybox ping "$@"\n')
        (tmp_path / "ping").chmod(0o755)
        script = f"PATH={tmp_path}:$PATH\n{script}"
    return script


@pytest.mark.tools
@pytest.mark.parametrize("shell", ["sh", "busybox sh"])
def test_the_network_check_passes_while_one_target_answers_and_fails_when_none_does(files, shell, tmp_path):
    script = _network_check_in(files, shell, tmp_path)
    assert _run_network_check(script, ["10.77.0.9", "10.77.0.1"], shell) == 0
    assert _run_network_check(script, ["10.77.0.1"], shell) == 0
    assert _run_network_check(script, ["10.77.0.9", "10.77.0.8"], shell) == 1


@pytest.mark.tools
@pytest.mark.parametrize("shell", ["sh", "busybox sh"])
def test_the_network_check_sees_a_target_that_starts_answering_during_its_run(files, shell, tmp_path):
    """A node in FAULT must not wait for keepalived's next run (up to a second) to see its network
    back: a target that starts answering 0.3 s into the run makes this run succeed, early."""
    script = _network_check_in(files, shell, tmp_path)
    late = "(sleep 0.3; ip addr add 10.77.0.5/24 dev kha-a) & "
    started = time.monotonic()
    assert _run_network_check(script, ["10.77.0.9", "10.77.0.5"], shell, before=late) == 0
    assert time.monotonic() - started < 0.75, "the run ends at the first answer, before its last round"


def test_keepalived_is_unicast_backup_nopreempt_with_distinct_priorities(files):
    priorities = []
    for node_files in files.values():
        conf = node_files[KEEPALIVED_CONF.key]
        assert "state BACKUP" in conf and "nopreempt" in conf and "state MASTER" not in conf
        assert "enable_script_security" in conf and re.search(r"script_user \w+", conf)
        instance = vrrp_instance(conf)
        peers, own = list(instance.peers), instance.src_ip
        assert sorted(peers + [own]) == ["192.0.2.11", "192.0.2.12", "192.0.2.13"] and own not in peers
        assert "192.0.2.10/32 dev ens3" in conf
        priorities.append(instance.priority)
    assert len(set(priorities)) == len(priorities)


def test_haproxy_balances_over_every_apiserver_with_https_readyz(files):
    cfg = files["demo-cp-1"][HAPROXY_CFG.key]
    assert "bind :9443" in cfg and "balance roundrobin" in cfg
    assert "http-check connect ssl" in cfg and "http-check send meth GET uri /readyz" in cfg
    assert "/healthz" not in cfg, "a draining apiserver answers /healthz until it stops: haproxy must not ask it"
    assert re.findall(r"^\s*server (\S+) (\S+)", cfg, re.M) == [
        ("demo-cp-1", "192.0.2.11:6443"),
        ("demo-cp-2", "192.0.2.12:6443"),
        ("demo-cp-3", "192.0.2.13:6443"),
    ]


def _ms(value: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s)", value)
    assert m, value
    number, unit = m.groups()
    return int(number) * (1 if unit == "ms" else 1000)


def test_the_documented_apiserver_shutdown_delay_outlasts_haproxys_worst_case_detection(files):
    """docs/design.md's --shutdown-delay-duration, from the timings haproxy really gets: the next check
    within inter, then fall failed checks fastinter apart, each allowed min(timeout connect, inter)
    to connect and timeout check to answer. (The lab's stand-in drains for as long: tests/test_lab_apiserver.py.)"""
    cfg = files["demo-cp-1"][HAPROXY_CFG.key]
    server = dict(
        re.findall(r"\b(inter|fastinter|fall) (\w+)", re.search(r"^\s*default-server .*$", cfg, re.M).group(0))
    )
    inter, fastinter, fall = _ms(server["inter"]), _ms(server["fastinter"]), int(server["fall"])
    connect, check = (_ms(re.search(rf"^\s*timeout {t} (\w+)$", cfg, re.M).group(1)) for t in ("connect", "check"))
    worst_ms = inter + fall * (min(connect, inter) + check) + (fall - 1) * fastinter
    assert worst_ms == 2850
    readme = (Path(__file__).resolve().parent.parent / "docs" / "design.md").read_text()
    assert re.search(r"0\.25 \+ 2 × \(0\.25 \+ 1\) \+ 0\.1 =\s+\*\*2\.85 s\*\*", readme), "the documented arithmetic"
    [delay] = re.findall(r"We recommend \*\*(\d+) s\*\*", readme)
    assert int(delay) * 1000 >= worst_ms + 2000, "a margin of 2 s at least"
    assert f"--shutdown-delay-duration={delay}s" in readme


def test_the_plans_detection_and_shutdown_delay_are_the_ones_the_rendered_haproxy_cfg_gives(files):
    """cluster.plan computes what docs/design.md recommends; the rendered config must agree with it."""
    cfg = files["demo-cp-1"][HAPROXY_CFG.key]
    server = dict(
        re.findall(r"\b(inter|fastinter|fall) (\w+)", re.search(r"^\s*default-server .*$", cfg, re.M).group(0))
    )
    inter, fastinter, fall = _ms(server["inter"]), _ms(server["fastinter"]), int(server["fall"])
    connect, check = (_ms(re.search(rf"^\s*timeout {t} (\w+)$", cfg, re.M).group(1)) for t in ("connect", "check"))
    assert (
        round(plan.detection_worst_s() * 1000) == inter + fall * (min(connect, inter) + check) + (fall - 1) * fastinter
    )
    readme = (Path(__file__).resolve().parent.parent / "docs" / "design.md").read_text()
    [delay] = re.findall(r"We recommend \*\*(\d+) s\*\*", readme)
    assert plan.shutdown_delay_s() == int(delay)


def test_haproxy_health_and_stats_are_on_loopback_only_and_metrics_on_the_nodes_address(files):
    for node, address in zip(NODE_NAMES, ["192.0.2.11", "192.0.2.12", "192.0.2.13"], strict=True):
        cfg = files[node][HAPROXY_CFG.key]
        binds = re.findall(r"^\s*bind (\S+)", cfg, re.M)
        assert binds == ["127.0.0.1:9444", f"{address}:8405", ":9443"]
    cfg = files["demo-cp-1"][HAPROXY_CFG.key]
    assert "stats uri /stats" in haproxy_section(cfg, "frontend haproxy-ready")
    metrics = haproxy_section(cfg, "frontend metrics")
    assert "use-service prometheus-exporter if { path /metrics }" in metrics
    assert "use-service lua.keepalived_metrics if { path /metrics/keepalived }" in metrics
    assert "stats" not in metrics


def haproxy_section(cfg, header):
    """The lines of one haproxy.cfg section, up to the next unindented line."""
    body = cfg.split(f"\n{header}\n", 1)[1]
    return body.split("\n\n", 1)[0]
    directives = "\n".join(line for line in cfg.splitlines() if not line.lstrip().startswith("#"))
    assert "stats socket" not in directives and "pidfile" not in directives  # the image's user cannot write them


def test_haproxy_timeouts_keep_long_streams_open(files):
    cfg = files["demo-cp-1"][HAPROXY_CFG.key]
    for key in ("client", "server"):
        value = re.search(rf"timeout {key} (\d+)h", cfg)
        assert value and int(value.group(1)) >= 1


def test_containers_restart_run_on_the_host_network_and_read_configs_where_images_expect(example_plan):
    haproxy, keepalived = container_commands(example_plan)
    for cmd in (haproxy, keepalived):
        assert cmd[:3] == ["docker", "run", "--detach"]
        assert cmd[cmd.index("--restart") + 1] == "always"
        assert cmd[cmd.index("--network") + 1] == "host"
    assert volumes(haproxy) == {"/etc/kubeadm-ha/haproxy:/usr/local/etc/haproxy:ro", f"{STATE_DIR}:{STATE_DIR}:ro"}
    assert haproxy[-1] == example_plan.haproxy_image
    caps = {keepalived[i + 1] for i, a in enumerate(keepalived) if a == "--cap-add"}
    assert caps == {"NET_ADMIN", "NET_BROADCAST", "NET_RAW"}
    # osixia/keepalived 2.0.20 runs keepalived -f /usr/local/etc/keepalived/keepalived.conf.
    assert volumes(keepalived) == {
        "/etc/kubeadm-ha/keepalived:/usr/local/etc/keepalived:ro",
        f"{STATE_DIR}:{STATE_DIR}",
    }
    assert keepalived[-2:] == [example_plan.keepalived_image, "--copy-service"]


def volumes(cmd):
    return {cmd[i + 1] for i, a in enumerate(cmd) if a == "--volume"}


def test_containers_mount_whole_folders_holding_every_file_they_read():
    """A single-file mount would pin the file's inode: a file renamed into place would never be seen."""
    for spec in CONTAINER_FILES:
        assert spec.folder in (HAPROXY_DIR, KEEPALIVED_DIR)
        assert spec.host_path == f"{spec.folder.host}/{spec.key}"


def test_each_run_line_carries_a_label_that_changes_with_the_line(example_plan):
    from cluster.plan import make_plan as plan_of

    labels = [[a for a in cmd if a.startswith(f"{RUN_LABEL}=")] for cmd in container_commands(example_plan)]
    assert all(len(found) == 1 for found in labels) and labels[0] != labels[1]
    changed = container_commands(plan_of(config_from({"containers.haproxy": "haproxy:2.8.17"})))
    assert [a for a in changed[0] if a.startswith(f"{RUN_LABEL}=")] != labels[0]
    assert [a for a in changed[1] if a.startswith(f"{RUN_LABEL}=")] == labels[1]


def test_cloud_config_prepares_docker_and_images_with_retries_then_checks_both_containers_run(example_plan):
    doc = load_cloud_config(render_cloud_config(example_plan, "demo-cp-1"))
    # No packages module (one try, no back-off, and an install even where the image has Docker).
    assert "packages" not in doc and "package_update" not in doc
    images = [example_plan.haproxy_image, example_plan.keepalived_image]
    assert doc["runcmd"] == [
        [BOOT_SCRIPT, "install"],
        ["systemctl", "enable", "--now", "docker"],
        [BOOT_SCRIPT, "pull", *images],
        *container_commands(example_plan),
        [BOOT_SCRIPT, "verify", *CONTAINERS],
    ]


@pytest.mark.parametrize("container", [0, 1], ids=["haproxy", "keepalived"])
def test_both_containers_logs_are_rotated_by_size_and_count(example_plan, container):
    run = parse_docker_run(container_commands(example_plan)[container])
    assert run.values("--log-driver") == ["json-file"]
    assert run.values("--log-opt") == [
        f"max-size={plan.CONTAINER_LOG_MAX_MB}m",
        f"max-file={plan.CONTAINER_LOG_FILES}",
    ]


def test_haproxy_runs_with_an_explicit_open_files_limit_and_the_plans_maxconn(example_plan, files):
    haproxy = parse_docker_run(container_commands(example_plan)[0])
    assert haproxy.name == HAPROXY_CONTAINER
    assert haproxy.values("--ulimit") == [f"nofile={plan.HAPROXY_NOFILE}:{plan.HAPROXY_NOFILE}"]
    assert global_maxconn(files["demo-cp-1"][HAPROXY_CFG.key]) == plan.HAPROXY_MAXCONN


def test_rendered_text_has_no_terraform_template_syntax(files):
    for node_files in files.values():
        for text in node_files.values():
            assert "${" not in text and "%{" not in text


@pytest.mark.tools
@pytest.mark.parametrize("count", ALLOWED_NODE_COUNTS)
def test_every_allowed_node_count_renders_configs_the_tools_accept(count):
    members = [{"name": f"demo-cp-{i}", "address": f"192.0.2.{10 + i}"} for i in range(1, count + 1)]
    plan = make_plan(config_from({"nodes.count": count, "nodes.members": members}))
    last = plan.nodes[-1].name
    node_files = render_node_files(plan, last)
    assert haproxy_check(node_files).returncode == 0
    assert keepalived_check(node_files, plan.interface) == []
    assert cloud_init_schema(render_cloud_config(plan, last)).returncode == 0


def test_allocated_addresses_need_explicit_references():
    plan = make_plan(config_from({"nodes.members": DELETE}))
    with pytest.raises(ValueError, match="allocated by Neutron"):
        render_node_files(plan, "demo-cp-1")


def test_extract_gives_back_each_nodes_files_from_the_synthesized_json(example_json, example_plan, files, tmp_path):
    from userdata.cloudconfig import written_files
    from userdata.extract import main as extract
    from userdata.stack import user_data_by_node

    by_node = user_data_by_node(example_json)
    assert sorted(by_node) == NODE_NAMES
    for node in NODE_NAMES:
        written = written_files(by_node[node])
        expected = {s.host_path: files[node][s.key] for s in CONTAINER_FILES}
        expected |= {f["host_path"]: f["content"] for f in kubeadm_files(example_plan, node)}
        expected[BOOT_SCRIPT] = render_boot_script()
        assert {p: f.content for p, f in written.items()} == expected
    stack = tmp_path / "cdk.tf.json"
    stack.write_text(__import__("json").dumps(example_json))
    assert extract([str(stack), "demo-cp-2", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / HAPROXY_CFG.host_path.lstrip("/")).read_text() == files["demo-cp-2"][HAPROXY_CFG.key]
    assert extract([str(stack), "nope", str(tmp_path / "out")]) == 2


def test_a_docker_run_option_the_project_does_not_know_is_refused_not_guessed():
    # --gpus takes a value: a guess that it is a flag would read "all" as the image
    with pytest.raises(ValueError, match=r"docker run option --gpus is not one this project reads"):
        parse_docker_run(["docker", "run", "--detach", "--gpus", "all", "haproxy:2.8.16"])


def test_a_docker_run_line_gives_its_label_and_mounts(example_plan):
    keepalived = parse_docker_run(container_commands(example_plan)[1])
    assert keepalived.label is not None and len(keepalived.label) == 16
    assert keepalived.mounts() == [
        ("/etc/kubeadm-ha/keepalived", "/usr/local/etc/keepalived", "ro"),
        ("/run/kubeadm-ha", "/run/kubeadm-ha", "rw"),
    ]


def test_every_boot_sets_arp_retransmission_on_the_vip_interface(example_plan):
    """bootcmd (every boot, unlike runcmd): ARP re-asks an unanswered neighbour every 100 ms on the
    VIP's interface, so the network check sees a healed partition within ~0.1 s, not ~1 s."""
    doc = load_cloud_config(render_cloud_config(example_plan, "demo-cp-1"))
    assert doc["bootcmd"] == [["sysctl", "-w", f"net.ipv4.neigh.{example_plan.interface}.retrans_time_ms=100"]]
