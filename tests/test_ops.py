"""The operator's tool against simulated nodes (a fake ssh runner): plans, dry runs, validation,
roll order and stops, status findings and exit codes, JSON, and the ssh command line."""

from __future__ import annotations

import copy
import json
import re

import pytest

from cluster.plan import BOOT_FAILED_MARK, make_plan
from ops import Exit
from ops import __main__ as ops_main
from ops.__main__ import main
from ops.inventory import load_inventory
from ops.roll import ChangeKind, Roller, RollStopped, describe, make_roll_plan
from ops.ssh import Ssh, SshOptions, ssh_argv
from ops.status import Drift, FindingKind, collect, findings
from tests.conftest import config_from
from tests.fake_nodes import FakeCluster
from userdata.render import HAPROXY_CFG, KEEPALIVED_CONF, render_cloud_config
from userdata.stack import INSTANCE

NODES = ["demo-cp-1", "demo-cp-2", "demo-cp-3"]


def stack_for(example_json, changes=None):
    """The example's synthesized JSON with each node's user_data rendered from a changed config."""
    doc = copy.deepcopy(example_json)
    plan = make_plan(config_from(changes or {}))
    for vm in doc["resource"][INSTANCE].values():
        vm["user_data"] = render_cloud_config(plan, vm["name"])
    return doc


@pytest.fixture
def write_stack(tmp_path):
    def write(doc, name="cdk.tf.json"):
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return path

    return write


@pytest.fixture
def deployed(example_json, write_stack, example_plan):
    """A cluster running the example's userdata; demo-cp-1 holds the VIP."""
    return FakeCluster(load_inventory(example_plan, write_stack(example_json, "deployed.json")))


def inventory(example_json, write_stack, changes=None):
    return load_inventory(make_plan(config_from(changes or {})), write_stack(stack_for(example_json, changes)))


def run_cli(capsys, cluster, stack, command="status", *args):
    code = main([command, "--stack", str(stack), *args], ssh=Ssh(runner=cluster))
    out = capsys.readouterr()
    return code, out.out, out.err


def roller(cluster, inv, **kw):
    lines = []
    r = Roller(inv, Ssh(runner=cluster), say=lines.append, sleep=cluster.sleep, clock=cluster.clock, **kw)
    return r, lines


def plan_for(cluster, inv):
    return make_roll_plan(inv, collect(inv, Ssh(runner=cluster)))


# --- ssh -----------------------------------------------------------------------------------------


def test_ssh_argv_forces_batch_mode_and_strict_host_keys_before_any_user_option():
    argv = ssh_argv(
        "192.0.2.11",
        SshOptions(user="ubuntu", options=("StrictHostKeyChecking=no", "ProxyJump=bastion"), connect_timeout=7),
    )
    assert argv[0] == "ssh" and "-T" in argv
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert options[:2] == ["BatchMode=yes", "StrictHostKeyChecking=yes"]  # ssh takes the first value given
    assert options[2:] == ["StrictHostKeyChecking=no", "ProxyJump=bastion", "ConnectTimeout=7"]
    assert argv[argv.index("-l") + 1] == "ubuntu"
    assert argv[-3:] == ["--", "192.0.2.11", "sudo -n sh -s"]


def test_ssh_argv_leaves_the_user_to_ssh_config_and_can_skip_sudo():
    argv = ssh_argv("node", SshOptions(sudo=False))
    assert "-l" not in argv and argv[-1] == "sh -s"


# --- status --------------------------------------------------------------------------------------


def test_status_of_a_healthy_cluster_exits_0_with_a_table(capsys, deployed, example_json, write_stack):
    code, out, _ = run_cli(capsys, deployed, write_stack(example_json))
    assert code == 0
    header, *rows = out.splitlines()[:4]
    assert header.split()[:5] == ["NODE", "ADDRESS", "SSH", "KEEPALIVED", "VIP"]
    assert rows[0].split()[:5] == ["demo-cp-1", "192.0.2.11", "ok", "MASTER", "yes"]
    assert rows[1].split()[:5] == ["demo-cp-2", "192.0.2.12", "ok", "BACKUP", "-"]
    assert "3/3" in rows[0] and "haproxy:2.8.16" in rows[0] and "osixia/keepalived:2.0.20" in rows[0]
    assert out.rstrip().endswith("healthy: one VIP holder, every node as its userdata says")


def break_no_holder(c):
    c.node("demo-cp-1").holds_vip = False


def break_two_holders(c):
    c.node("demo-cp-2").holds_vip = True


def break_fault(c):
    c.node("demo-cp-3").state = "FAULT"


def break_apiserver(c):
    c.node("demo-cp-2").apiservers["demo-cp-3"] = "DOWN"


def break_container(c):
    c.node("demo-cp-3").containers["haproxy"].running = False


def break_file(c):
    path = HAPROXY_CFG.host_path
    content, owner, mode = c.node("demo-cp-2").files[path]
    c.node("demo-cp-2").files[path] = (content + "# edited by hand\n", owner, mode)


def break_image(c):
    c.node("demo-cp-1").containers["keepalived"].image = "osixia/keepalived:2.0.19"


def break_reachability(c):
    c.node("demo-cp-3").reachable = False


PULL_GAVE_UP = (
    "docker pull haproxy:2.8.16 failed 13 times in 555 s: toomanyrequests: You have reached your pull rate limit."
)


def break_boot(c):
    c.node("demo-cp-2").boot_failed = PULL_GAVE_UP


FINDINGS = [
    (break_no_holder, [r"^no node holds the VIP 192\.0\.2\.10$"]),
    (break_two_holders, [r"^2 nodes hold the VIP 192\.0\.2\.10: demo-cp-1, demo-cp-2$"]),
    (break_fault, [r"^demo-cp-3: keepalived is in FAULT$"]),
    (break_apiserver, [r"^demo-cp-2: haproxy sees apiserver demo-cp-3 DOWN \(L4CON: Connection refused\)$"]),
    (break_container, [r"^demo-cp-3: container haproxy is not running \(exited\)$"]),
    (break_file, [r"^demo-cp-2: drift: /etc/kubeadm-ha/haproxy/haproxy\.cfg: content differs$"]),
    (
        break_image,
        [
            r"^demo-cp-1: drift: container keepalived: image change: runs osixia/keepalived:2\.0\.19, userdata says "
            r"osixia/keepalived:2\.0\.20$"
        ],
    ),
    (
        break_reachability,
        [r"^demo-cp-3: unreachable over SSH \(ssh: connect to host 192\.0\.2\.13 port 22: Connection timed out\)$"],
    ),
    (
        break_boot,
        [
            r"^demo-cp-2: first boot failed: docker pull haproxy:2\.8\.16 failed 13 times in 555 s: toomanyrequests: "
            r"You have reached your pull rate limit\. \(/var/lib/kubeadm-ha/boot-failed on the node; cloud-init's log "
            r"says more\)$"
        ],
    ),
]


@pytest.mark.parametrize(("fault", "expected"), FINDINGS, ids=[f[0].__name__ for f in FINDINGS])
def test_status_exits_1_with_one_line_per_finding(capsys, deployed, example_json, write_stack, fault, expected):
    fault(deployed)
    code, out, _ = run_cli(capsys, deployed, write_stack(example_json))
    assert code == 1
    found = out.split("\n\n", 1)[1].strip().splitlines()
    for pattern in expected:
        assert any(re.search(pattern, line) for line in found), found
    assert "healthy" not in out


def test_an_error_before_any_node_answers_is_one_line_and_exit_2(capsys, example_json, write_stack):
    from ops import OpsError

    def no_ssh(argv, stdin, timeout):
        raise OpsError("ssh: command not found; install the OpenSSH client")

    code, out, err = run_cli(capsys, no_ssh, write_stack(example_json))
    assert (code, out, err) == (Exit.BAD_INPUT, "", "error: ssh: command not found; install the OpenSSH client\n")


def test_status_json_has_a_fixed_shape(capsys, deployed, example_json, write_stack):
    break_apiserver(deployed)
    code, out, _ = run_cli(capsys, deployed, write_stack(example_json), "status", "--json")
    doc = json.loads(out)
    assert code == 1
    assert set(doc) == {"cluster", "vip", "healthy", "holders", "nodes", "findings", "finding_details"}
    assert (doc["cluster"], doc["vip"], doc["healthy"], doc["holders"]) == ("demo", "192.0.2.10", False, ["demo-cp-1"])
    node = doc["nodes"][1]
    assert set(node) == {
        "name",
        "address",
        "reachable",
        "keepalived",
        "holds_vip",
        "boot_failed",
        "haproxy_answers",
        "apiservers",
        "containers",
        "drift",
    }
    assert node["keepalived"] == {"state": "BACKUP", "since": deployed.node("demo-cp-2").since, "priority": 140}
    assert {"name": "demo-cp-3", "status": "DOWN", "check": "L4CON", "last_check": "Connection refused"} in node[
        "apiservers"
    ]
    assert node["containers"]["haproxy"]["image"] == "haproxy:2.8.16" and node["containers"]["haproxy"]["running"]
    assert node["drift"] == {"files": [], "containers": []}
    assert doc["findings"] == ["demo-cp-2: haproxy sees apiserver demo-cp-3 DOWN (L4CON: Connection refused)"]


def test_status_json_of_an_unreachable_node_says_why(capsys, deployed, example_json, write_stack):
    break_reachability(deployed)
    _, out, _ = run_cli(capsys, deployed, write_stack(example_json), "status", "--json")
    assert json.loads(out)["nodes"][2] == {
        "name": "demo-cp-3",
        "address": "192.0.2.13",
        "reachable": False,
        "error": "ssh: connect to host 192.0.2.13 port 22: Connection timed out",
    }


# --- roll: plan and dry run ----------------------------------------------------------------------

CONFIG_CHANGE = {"ports.health": 9445}  # haproxy.cfg and the check script change on every node
IMAGE_CHANGE = {"containers.haproxy": "haproxy:2.8.17"}


@pytest.mark.parametrize("holder", NODES)
def test_roll_plan_puts_backups_first_and_the_vip_holder_last(example_json, write_stack, holder):
    deployed = FakeCluster(load_inventory(make_plan(config_from()), write_stack(example_json, "d.json")), holder=holder)
    plan = plan_for(deployed, inventory(example_json, write_stack, CONFIG_CHANGE))
    assert [c.node.name for c in plan.changes] == [n for n in NODES if n != holder] + [holder]
    assert [c.holder for c in plan.changes] == [False, False, True]


def test_roll_plan_says_config_only_or_image_change_and_which_files(deployed, example_json, write_stack):
    config = plan_for(deployed, inventory(example_json, write_stack, CONFIG_CHANGE))
    assert {c.kind for c in config.changes} == {"config-only"}
    assert {f.path for f, _ in config.changes[0].files} == {
        HAPROXY_CFG.host_path,
        "/etc/kubeadm-ha/keepalived/check_haproxy.sh",
    }
    assert config.changes[0].reloads == ("haproxy", "keepalived")
    image = plan_for(deployed, inventory(example_json, write_stack, IMAGE_CHANGE))
    assert {c.kind for c in image.changes} == {"image change"}
    assert all(c.recreate == ("haproxy",) for c in image.changes)
    assert [c.hands_over for c in image.changes] == [False, False, True]


def test_dry_run_prints_the_plan_and_changes_nothing(capsys, deployed, example_json, write_stack):
    code, out, _ = run_cli(capsys, deployed, write_stack(stack_for(example_json, IMAGE_CHANGE)), "roll", "--dry-run")
    assert code == 0
    assert deployed.changes == []
    assert "1. demo-cp-2 (backup): image change: recreate haproxy" in out
    assert (
        "3. demo-cp-1 (VIP holder, last): image change: hand the VIP over (docker stop keepalived), recreate "
        "haproxy, start keepalived" in out
    )
    assert "container haproxy: image change: runs haproxy:2.8.16, userdata says haproxy:2.8.17" in out


def test_nothing_to_roll_when_every_node_matches(capsys, deployed, example_json, write_stack):
    code, out, _ = run_cli(capsys, deployed, write_stack(example_json), "roll")
    assert code == 0 and deployed.changes == []
    assert "nothing to roll" in out


def test_roll_refuses_to_start_without_exactly_one_holder(capsys, deployed, example_json, write_stack):
    break_two_holders(deployed)
    code, _, err = run_cli(capsys, deployed, write_stack(stack_for(example_json, CONFIG_CHANGE)), "roll")
    assert code == Exit.STOPPED and deployed.changes == []
    assert "cannot roll: the VIP 192.0.2.10 must have exactly one holder, it has demo-cp-1, demo-cp-2" in err


# --- roll: validation ----------------------------------------------------------------------------


def test_a_config_that_does_not_parse_stops_the_roll_before_any_change(capsys, deployed, example_json, write_stack):
    doc = stack_for(example_json, CONFIG_CHANGE)
    vm = doc["resource"][INSTANCE]["instance_demo-cp-3"]
    vm["user_data"] = vm["user_data"].replace("    maxconn 20000\n", "    maxconn 20000\n          BROKEN\n", 1)
    code, _, err = run_cli(capsys, deployed, write_stack(doc), "roll")
    assert code == Exit.STOPPED
    assert deployed.changes == []
    assert "validation failed, no node was changed" in err
    assert (
        "demo-cp-3: /etc/kubeadm-ha/haproxy/haproxy.cfg: haproxy -c in haproxy:2.8.16 refuses it: [ALERT]"
        " (1) : config : parsing [/usr/local/etc/haproxy/haproxy.cfg:3] : unknown keyword 'BROKEN'"
    ) in re.sub(r" +", " ", err)


def test_validation_runs_the_target_image_with_the_lines_options_and_staged_folders(
    deployed, example_json, write_stack
):
    inv = inventory(example_json, write_stack, IMAGE_CHANGE)
    r, _ = roller(deployed, inv)
    script = r.validation_script(inv.node("demo-cp-2")).lines
    (check,) = [line for line in script if "haproxy-check" in line]
    argv = check.split()
    assert argv[argv.index("--entrypoint") + 1 :] == [
        "haproxy",
        "haproxy:2.8.17",
        "-c",
        "-f",
        "/usr/local/etc/haproxy/haproxy.cfg",
    ]
    assert "--restart" not in argv and "--detach" not in argv and "--name" not in argv
    (stage,) = {a.split(":")[0] for a in argv if a.endswith(":/usr/local/etc/haproxy:ro")}
    assert re.fullmatch(r"/tmp/kubeadm-ha-validate\.[0-9a-f]{16}/etc/kubeadm-ha/haproxy", stage)
    (kcheck,) = [line for line in script if "keepalived-check" in line]
    assert (
        "--cap-add NET_ADMIN" in kcheck
        and "keepalived -t -f /usr/local/etc/keepalived/keepalived.conf"
        in kcheck.replace("osixia/keepalived:2.0.20 ", "")
    )


def test_a_keepalived_conf_keepalived_rejects_stops_the_roll_before_any_change(deployed, example_json, write_stack):
    doc = stack_for(example_json, CONFIG_CHANGE)
    vm = doc["resource"][INSTANCE]["instance_demo-cp-1"]
    vm["user_data"] = vm["user_data"].replace("    vrrp_version 3\n", "    vrrp_version 3\n          BROKEN\n", 1)
    inv = load_inventory(make_plan(config_from(CONFIG_CHANGE)), write_stack(doc))
    r, _ = roller(deployed, inv)
    with pytest.raises(
        RollStopped,
        match=rf"demo-cp-1: {KEEPALIVED_CONF.host_path}: keepalived -t in osixia/keepalived:2\.0\.20 reports: "
        r"\(Line 3\) Unknown keyword 'BROKEN'",
    ):
        r.roll(plan_for(deployed, inv))
    assert deployed.changes == []


def test_an_image_the_node_cannot_get_stops_the_roll_before_any_change(deployed, example_json, write_stack):
    inv = inventory(example_json, write_stack, IMAGE_CHANGE)
    for name in ("demo-cp-1", "demo-cp-2"):
        deployed.node(name).images.add("haproxy:2.8.17")
    r, _ = roller(deployed, inv)
    with pytest.raises(
        RollStopped,
        match=r"demo-cp-3: image haproxy:2\.8\.17 is not on the node and cannot be pulled: Error response from "
        r"daemon: pull access denied",
    ):
        r.roll(plan_for(deployed, inv))
    assert deployed.changes == []


# --- roll: changing nodes ------------------------------------------------------------------------


def test_config_only_roll_writes_reloads_and_never_moves_the_vip(capsys, deployed, example_json, write_stack):
    stack = write_stack(stack_for(example_json, CONFIG_CHANGE))
    code, out, _ = run_cli(capsys, deployed, stack, "roll")
    assert code == 0, out
    assert deployed.vip_moves == 0 and deployed.node("demo-cp-1").holds_vip
    done = [(n, c) for n, c in deployed.changes if not c.startswith("write")]
    assert done == [
        (n, c)
        for n in ("demo-cp-2", "demo-cp-3", "demo-cp-1")
        for c in ("docker kill --signal USR2", "kha_reload_keepalived keepalived")
    ]
    assert "now run `cdktf deploy`" in out and "no VM is replaced" in out
    code, out, _ = run_cli(capsys, deployed, stack, "status")
    assert code == 0, out


def test_image_roll_hands_the_vip_over_before_recreating_the_holder_and_moves_it_once(
    capsys, deployed, example_json, write_stack
):
    stack = write_stack(stack_for(example_json, IMAGE_CHANGE))
    for node in deployed.nodes.values():
        node.images.add("haproxy:2.8.17")
    code, out, _ = run_cli(capsys, deployed, stack, "roll")
    assert code == 0, out
    assert deployed.vip_moves == 1 and deployed.node("demo-cp-2").holds_vip
    holder = [c for n, c in deployed.changes if n == "demo-cp-1"]
    assert holder == ["docker stop keepalived", "kha_recreate haproxy docker run", "docker start keepalived"]
    assert [n for n, _ in deployed.changes] == ["demo-cp-2", "demo-cp-3", "demo-cp-1", "demo-cp-1", "demo-cp-1"]
    assert all(c.image == "haproxy:2.8.17" for n in deployed.nodes.values() for c in [n.containers["haproxy"]])
    assert run_cli(capsys, deployed, stack, "status")[0] == 0


def cut_demo_cp_3_once_demo_cp_2_reloads(deployed):
    """demo-cp-3 stops answering SSH once demo-cp-2 (the first of the plan) has reloaded haproxy."""

    def cut(node, count):
        if node == "demo-cp-3" and any(n == "demo-cp-2" and c.startswith("docker kill") for n, c in deployed.changes):
            deployed.node("demo-cp-3").reachable = False

    deployed.before_script = cut


def test_a_node_unreachable_mid_roll_stops_there_and_leaves_later_nodes_untouched(
    capsys, deployed, example_json, write_stack
):
    cut_demo_cp_3_once_demo_cp_2_reloads(deployed)
    code, _, err = run_cli(capsys, deployed, write_stack(stack_for(example_json, CONFIG_CHANGE)), "roll")
    assert code == Exit.STOPPED
    assert "demo-cp-3: unreachable over SSH before its change" in err and "not rolled: demo-cp-1" in err
    assert {n for n, _ in deployed.changes} == {"demo-cp-2"}


# --- roll --json: the outcome as data ------------------------------------------------------------


def roll_json(capsys, deployed, stack, *args):
    code, out, err = run_cli(capsys, deployed, stack, "roll", "--json", *args)
    return code, json.loads(out), err  # stdout is the one JSON document: the plan's lines went to stderr


def test_roll_json_names_the_nodes_rolled_and_stops_nothing(capsys, deployed, example_json, write_stack):
    code, doc, err = roll_json(capsys, deployed, write_stack(stack_for(example_json, CONFIG_CHANGE)))
    assert code == Exit.OK and doc["stopped"] is None
    assert doc["rolled"] == [c["node"] for c in doc["changes"]] == ["demo-cp-2", "demo-cp-3", "demo-cp-1"]
    assert {c["kind"] for c in doc["changes"]} == {"config-only"} and doc["holder"] == "demo-cp-1"
    assert "roll plan (3 of 3 nodes; VIP holder: demo-cp-1):" in err


def test_roll_json_dry_run_plans_and_rolls_nothing(capsys, deployed, example_json, write_stack):
    code, doc, _ = roll_json(capsys, deployed, write_stack(stack_for(example_json, CONFIG_CHANGE)), "--dry-run")
    assert (code, doc["dry_run"], doc["rolled"], doc["stopped"], len(doc["changes"])) == (Exit.OK, True, [], None, 3)
    assert deployed.changes == []


def test_roll_json_says_why_it_stopped_as_data(capsys, deployed, example_json, write_stack):
    break_two_holders(deployed)
    code, doc, err = roll_json(capsys, deployed, write_stack(stack_for(example_json, CONFIG_CHANGE)))
    assert code == Exit.STOPPED and doc["changes"] == [] and doc["rolled"] == []
    stopped = doc["stopped"]
    assert (stopped["kind"], stopped["node"], stopped["detail"]) == ("not_one_holder", None, "demo-cp-1, demo-cp-2")
    assert err == f"error: {stopped['message']}\n"


def test_roll_json_of_a_roll_stopped_mid_way_names_the_node_and_what_was_rolled(
    capsys, deployed, example_json, write_stack
):
    cut_demo_cp_3_once_demo_cp_2_reloads(deployed)
    code, doc, _ = roll_json(capsys, deployed, write_stack(stack_for(example_json, CONFIG_CHANGE)))
    assert code == Exit.STOPPED
    stopped = doc["stopped"]
    assert (stopped["kind"], stopped["node"]) == ("unreachable", "demo-cp-3")
    assert (doc["rolled"], stopped["not_rolled"]) == (["demo-cp-2"], ["demo-cp-3", "demo-cp-1"])


def test_roll_json_of_a_refused_validation_names_every_node_not_rolled(capsys, deployed, example_json, write_stack):
    doc = stack_for(example_json, CONFIG_CHANGE)
    vm = doc["resource"][INSTANCE]["instance_demo-cp-3"]
    vm["user_data"] = vm["user_data"].replace("    maxconn 20000\n", "    maxconn 20000\n          BROKEN\n", 1)
    code, out, _ = roll_json(capsys, deployed, write_stack(doc))
    assert code == Exit.STOPPED and out["stopped"]["kind"] == "validation_failed" and deployed.changes == []
    assert out["rolled"] == [] and out["stopped"]["not_rolled"] == ["demo-cp-2", "demo-cp-3", "demo-cp-1"]
    assert out["stopped"]["detail"].startswith("demo-cp-3: /etc/kubeadm-ha/haproxy/haproxy.cfg: haproxy -c in ")


def test_a_node_that_stays_unhealthy_stops_the_roll_naming_node_and_problem(deployed, example_json, write_stack):
    inv = inventory(example_json, write_stack, IMAGE_CHANGE)
    for node in deployed.nodes.values():
        node.images.add("haproxy:2.8.17")
    r, _ = roller(deployed, inv, gate_timeout=10)
    plan = plan_for(deployed, inv)
    original = deployed.started

    def haproxy_never_answers(node, name):
        original(node, name)
        if node.name == "demo-cp-2" and name == "haproxy":
            node.containers["haproxy"].running = False

    deployed.started = haproxy_never_answers
    with pytest.raises(RollStopped) as err:
        r.roll(plan)
    message = str(err.value)
    assert message.startswith("demo-cp-2: not healthy 10 s after the change: ")
    assert "container haproxy: not running (exited)" in message and "not rolled: demo-cp-3, demo-cp-1" in message
    assert {n for n, _ in deployed.changes} == {"demo-cp-2"}


def test_a_failing_step_stops_the_roll_with_its_output(deployed, example_json, write_stack):
    inv = inventory(example_json, write_stack, CONFIG_CHANGE)
    deployed.node("demo-cp-3").fail_step = "reload-haproxy"
    r, _ = roller(deployed, inv)
    with pytest.raises(
        RollStopped, match=r"^demo-cp-3: reload-haproxy failed while applying the change: boom; not rolled: demo-cp-1$"
    ):
        r.roll(plan_for(deployed, inv))
    assert "demo-cp-1" not in {n for n, _ in deployed.changes}


def test_a_handover_nobody_takes_restarts_keepalived_and_stops(deployed, example_json, write_stack):
    inv = inventory(example_json, write_stack, IMAGE_CHANGE)
    for node in deployed.nodes.values():
        node.images.add("haproxy:2.8.17")
    deployed.backups_take_over = False
    r, _ = roller(deployed, inv, handover_timeout=2)
    with pytest.raises(
        RollStopped,
        match=(
            r"^demo-cp-1: no other node took the VIP within 2 s of stopping keepalived there; "
            r"keepalived was started again and the roll stops$"
        ),
    ):
        r.roll(plan_for(deployed, inv))
    assert [c for n, c in deployed.changes if n == "demo-cp-1"] == ["docker stop keepalived", "docker start keepalived"]
    assert deployed.node("demo-cp-1").containers["keepalived"].running


# --- inventory -----------------------------------------------------------------------------------


def test_neutron_allocated_addresses_come_from_the_deployed_stack_output(write_stack):
    from tests.conftest import DELETE, synth

    cfg = config_from({"nodes.members": DELETE})
    plan = make_plan(cfg)
    addresses = {"demo-cp-1": "192.0.2.51", "demo-cp-2": "192.0.2.52", "demo-cp-3": "192.0.2.53"}
    asked = []
    inv = load_inventory(plan, write_stack(synth(cfg)), lambda d: asked.append(d) or addresses)
    assert asked and [n.address for n in inv.nodes] == list(addresses.values())
    keepalived = next(f for f in inv.node("demo-cp-2").files if f.path == KEEPALIVED_CONF.host_path).content
    assert "unicast_src_ip 192.0.2.52" in keepalived and "192.0.2.51" in keepalived and "${" not in keepalived


def test_a_stack_from_another_config_is_refused(example_json, write_stack):
    from ops import OpsError

    with pytest.raises(
        OpsError, match=r"was not synthesized from this config \(nodes or VIP differ\); run `make synth`"
    ):
        load_inventory(make_plan(config_from({"vip.address": "192.0.2.20"})), write_stack(example_json))


def test_terraform_output_is_read_after_an_init_when_the_synthesized_folder_is_fresh(tmp_path):
    from subprocess import CompletedProcess

    from ops.inventory import terraform_node_addresses

    ran = []

    def run(argv, **kw):
        ran.append(argv[1])
        if argv[1] == "output" and "init" not in ran:
            return CompletedProcess(
                argv, 1, "", 'Error: Backend initialization required, please run "terraform init"\n'
            )
        return CompletedProcess(argv, 0, '{"demo-cp-1": "192.0.2.51"}' if argv[1] == "output" else "", "")

    assert terraform_node_addresses(tmp_path, run) == {"demo-cp-1": "192.0.2.51"}
    assert ran == ["output", "init", "output"]


def test_terraform_output_failure_is_one_line_naming_the_folder(tmp_path):
    from subprocess import CompletedProcess

    from ops import OpsError
    from ops.inventory import terraform_node_addresses

    def run(argv, **kw):
        return CompletedProcess(argv, 1, "", "Error: No outputs found\n")

    with pytest.raises(
        OpsError, match=rf"^terraform output node_addresses in {tmp_path}: Error: No outputs found \(deploy first"
    ):
        terraform_node_addresses(tmp_path, run)


# Terraform 1.11's own answer when the stack was never applied: plain (-no-color) and boxed.
NOT_DEPLOYED_PLAIN = """
Error: Output "node_addresses" not found

The output variable requested could not be found in the state file. If you
recently added this to your configuration, be sure to run `terraform apply`,
since the state won't be updated with new output variables until that command
is run.
"""
NOT_DEPLOYED_BOXED = (
    "\x1b[31m╷\x1b[0m\x1b[0m\n"
    '\x1b[31m│\x1b[0m \x1b[0m\x1b[1m\x1b[31mError: \x1b[0m\x1b[0m\x1b[1mOutput "node_addresses" not found\x1b[0m\n'
    "\x1b[31m│\x1b[0m \x1b[0m\n\x1b[31m│\x1b[0m \x1b[0m\x1b[0mThe output variable requested could not be found in "
    "the state file. If you\n"
    "\x1b[31m│\x1b[0m \x1b[0mrecently added this to your configuration, be sure to run "
    "`terraform\n\x1b[31m╵\x1b[0m\x1b[0m\n"
)


@pytest.mark.parametrize("stderr", [NOT_DEPLOYED_PLAIN, NOT_DEPLOYED_BOXED], ids=["no-color", "boxed"])
def test_terraform_output_failure_shows_terraforms_own_message(tmp_path, stderr):
    from subprocess import CompletedProcess

    from ops import OpsError
    from ops.inventory import terraform_node_addresses

    ran = []

    def run(argv, **kw):
        ran.append(argv)
        return CompletedProcess(argv, 1, "", stderr)

    with pytest.raises(OpsError) as err:
        terraform_node_addresses(tmp_path, run)
    assert str(err.value) == (
        f'terraform output node_addresses in {tmp_path}: Error: Output "node_addresses" not found — The output '
        "variable requested could not be found in the state file. (deploy first, or give every member an address in "
        "the config)"
    )
    assert all("-no-color" in argv for argv in ran)


def test_terraform_error_keeps_a_message_without_an_error_line():
    from tfcheck.text import terraform_error

    assert terraform_error("\n  something odd happened \n") == "something odd happened"
    assert terraform_error("") == "failed"


# --- findings as data ----------------------------------------------------------------------------

FINDING_KINDS = [
    (break_no_holder, FindingKind.NO_HOLDER),
    (break_two_holders, FindingKind.SEVERAL_HOLDERS),
    (break_fault, FindingKind.KEEPALIVED_FAULT),
    (break_apiserver, FindingKind.APISERVER_DOWN),
    (break_container, FindingKind.CONTAINER_STOPPED),
    (break_file, FindingKind.DRIFT),
    (break_image, FindingKind.DRIFT),
    (break_reachability, FindingKind.UNREACHABLE),
    (break_boot, FindingKind.BOOT_FAILED),
]


@pytest.mark.parametrize(("fault", "kind"), FINDING_KINDS, ids=[f[0].__name__ for f in FINDING_KINDS])
def test_each_fault_is_one_finding_of_its_kind(deployed, fault, kind):
    assert findings(deployed.inv, collect(deployed.inv, Ssh(runner=deployed))) == []
    fault(deployed)
    found = findings(deployed.inv, collect(deployed.inv, Ssh(runner=deployed)))
    assert [f.kind for f in found] == [kind]


FINDING_DATA = [
    (break_no_holder, {"kind": "no_holder", "node": None, "subject": "192.0.2.10", "detail": ""}),
    (
        break_two_holders,
        {
            "kind": "several_holders",
            "node": None,
            "subject": "192.0.2.10",
            "detail": "",
            "holders": ["demo-cp-1", "demo-cp-2"],
        },
    ),
    (break_fault, {"kind": "keepalived_fault", "node": "demo-cp-3", "subject": "", "detail": ""}),
    (
        break_apiserver,
        {
            "kind": "apiserver_down",
            "node": "demo-cp-2",
            "subject": "demo-cp-3",
            "detail": "DOWN (L4CON: Connection refused)",
        },
    ),
    (break_container, {"kind": "container_stopped", "node": "demo-cp-3", "subject": "haproxy", "detail": "exited"}),
    (
        break_file,
        {
            "kind": "drift",
            "node": "demo-cp-2",
            "subject": HAPROXY_CFG.host_path,
            "detail": "content differs",
            "drift": "file_content",
        },
    ),
    (
        break_image,
        {
            "kind": "drift",
            "node": "demo-cp-1",
            "subject": "keepalived",
            "detail": "image change: runs osixia/keepalived:2.0.19, userdata says osixia/keepalived:2.0.20",
            "drift": "container_image",
        },
    ),
    (
        break_reachability,
        {
            "kind": "unreachable",
            "node": "demo-cp-3",
            "subject": "",
            "detail": "ssh: connect to host 192.0.2.13 port 22: Connection timed out",
        },
    ),
    (break_boot, {"kind": "boot_failed", "node": "demo-cp-2", "subject": BOOT_FAILED_MARK, "detail": PULL_GAVE_UP}),
]


@pytest.mark.parametrize(("fault", "data"), FINDING_DATA, ids=[f[0].__name__ for f in FINDING_DATA])
def test_status_json_carries_each_findings_kind_node_subject_and_detail_beside_its_sentence(
    capsys, deployed, example_json, write_stack, fault, data
):
    fault(deployed)
    code, out, _ = run_cli(capsys, deployed, write_stack(example_json), "status", "--json")
    doc = json.loads(out)
    assert code == Exit.UNHEALTHY
    assert doc["finding_details"] == [{**data, "message": doc["findings"][0]}]
    assert len(doc["findings"]) == 1


def test_every_exit_code_is_its_own():
    assert len({int(e) for e in Exit}) == len(Exit) == len(Exit.__members__), "no code stands for two outcomes"
    assert (Exit.OK, Exit.UNHEALTHY, Exit.BAD_INPUT) == (0, 1, 2), "the codes monitoring and make already read"


def test_a_crash_exits_with_its_own_code_not_unhealthys(capsys, deployed, example_json, write_stack, monkeypatch):
    def crash(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ops_main, "findings", crash)
    code, out, err = run_cli(capsys, deployed, write_stack(example_json))
    assert code == Exit.CRASHED and code not in (Exit.UNHEALTHY, Exit.STOPPED)
    assert "RuntimeError: a bug" in err and err.rstrip().endswith("crashed (a bug in the tool; the traceback is above)")
    assert out == ""


def test_the_roll_decides_from_the_kind_of_change_not_its_wording(deployed, example_json, write_stack, monkeypatch):
    inv = inventory(example_json, write_stack, IMAGE_CHANGE)
    monkeypatch.setattr(Drift, "why", property(lambda self: "reworded"))
    plan = plan_for(deployed, inv)
    assert {c.kind for c in plan.changes} == {ChangeKind.IMAGE}
    assert "container haproxy: reworded" in "\n".join(describe(plan))


# --- userdata ------------------------------------------------------------------------------------


def test_userdata_prints_the_nodes_cloud_config_as_its_vm_receives_it(capsys, example_json, example_plan, write_stack):
    code = main(["userdata", "--stack", str(write_stack(example_json)), "demo-cp-2"])
    out = capsys.readouterr()
    assert code == 0 and out.err == ""
    assert out.out == render_cloud_config(example_plan, "demo-cp-2")
    assert out.out != render_cloud_config(example_plan, "demo-cp-1")


def test_userdata_of_an_unknown_node_is_one_line_naming_the_known_ones(capsys, example_json, write_stack):
    stack = write_stack(example_json)
    code = main(["userdata", "--stack", str(stack), "demo-cp-9"])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert out.err == f"error: {stack}: no node is named 'demo-cp-9'; its nodes: demo-cp-1, demo-cp-2, demo-cp-3\n"


def test_userdata_says_where_terraform_still_fills_in_neutron_allocated_addresses(capsys, write_stack):
    from tests.conftest import DELETE, synth

    cfg = config_from({"nodes.members": DELETE})
    code = main(["userdata", "--stack", str(write_stack(synth(cfg))), "demo-cp-1"])
    out = capsys.readouterr()
    assert code == 0
    assert "unicast_src_ip ${element(openstack_networking_port_v2.port_demo-cp-1.all_fixed_ips, 0)}" in out.out
    assert re.fullmatch(r"note: \d+ addresses are Terraform references .*\n", out.err)
