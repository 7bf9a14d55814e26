"""ops/node.sh run for real by sh, with docker, curl and ip stubbed: what it prints is what the
tool parses, and a file it writes is complete, with its owner and mode, or not there at all."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess

import pytest

from ops.remote import Script, parse_report, steps

STUBS = {
    "docker": """#!/bin/sh
case "$*" in
  *"inspect --type container --format"*haproxy)
    printf '%s' '{"State":{"Running":true,"Status":"running"},' \\
      '"Config":{"Image":"haproxy:2.8.16","Labels":{"io.kubeadm-ha.run":"abc"}},"Image":"sha256:1"}'
    echo ;;
  *inspect*) echo "Error: No such object: $*" >&2; exit 1 ;;
  *) echo "docker $*" ;;
esac
""",
    "curl": """#!/bin/sh
case "$*" in
  *"stats;csv"*) printf '%s\\n' '# pxname,svname,status,check_status,last_chk,type,' \\
      'kube-apiserver,demo-cp-1,UP,L7OK,200 OK,2,' 'kube-apiserver,demo-cp-2,DOWN,* L4CON,Connection refused,2,' \\
      'kube-apiserver,BACKEND,UP,,,1,' ;;
  */metrics*) printf '# HELP haproxy_process_start_time_seconds x\\nhaproxy_process_start_time_seconds 1764000000\\n' ;;
esac
""",
    "ip": """#!/bin/sh
echo "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever"
echo "2: ens3    inet 192.0.2.11/24 brd 192.0.2.255 scope global ens3\\       valid_lft forever preferred_lft forever"
echo "2: ens3    inet 192.0.2.10/32 scope global ens3\\       valid_lft forever preferred_lft forever"
""",
}


@pytest.fixture
def node_sh(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def run(script: Script) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-s"], input=script.text(), capture_output=True, text=True, env=env, timeout=30)

    return run


def test_report_prints_what_the_tool_parses(node_sh, tmp_path):
    state = tmp_path / "keepalived.state"
    state.write_text("state=MASTER\ninstance=DEMO_API\npriority=150\nsince=1764000001\n")
    present = tmp_path / "haproxy.cfg"
    present.write_text("global\n")
    present.chmod(0o640)
    script = Script().call(
        "kha_report",
        str(state),
        "9444",
        "/stats",
        "/metrics",
        "haproxy keepalived",
        str(present),
        str(tmp_path / "gone"),
    )
    result = node_sh(script)
    assert result.returncode == 0, result.stderr
    report = parse_report(result.stdout)
    assert report.state == {"state": "MASTER", "instance": "DEMO_API", "priority": "150", "since": "1764000001"}
    assert report.addresses == ("127.0.0.1", "192.0.2.11", "192.0.2.10") and report.holds("192.0.2.10")
    assert [(a.name, a.status, a.check, a.last_check) for a in report.apiservers] == [
        ("demo-cp-1", "UP", "L7OK", "200 OK"),
        ("demo-cp-2", "DOWN", "L4CON", "Connection refused"),
    ]
    assert report.haproxy_started == "1764000000"
    assert report.containers["haproxy"].running and report.containers["haproxy"].label == "abc"
    assert not report.containers["keepalived"].exists
    owner = f"{present.owner()}:{present.group()}"
    assert report.files[str(present)].sha256 == hashlib.sha256(b"global\n").hexdigest()
    assert (report.files[str(present)].owner, report.files[str(present)].mode) == (owner, "0640")
    assert report.files[str(tmp_path / "gone")].sha256 is None


def test_put_writes_the_whole_file_with_owner_and_mode_and_leaves_no_temporary(node_sh, tmp_path):
    target = tmp_path / "etc" / "kubeadm-ha" / "haproxy" / "haproxy.cfg"
    owner = f"{os.getuid()}:{os.getgid()}"
    content = "global\n    log stdout format raw local0 info\n" + "# ${not a variable} 'quotes' \"too\"\n" * 200
    result = node_sh(Script().put(str(target), owner, "0640", content))
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.read_text() == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(target.parent) == ["haproxy.cfg"]


def test_a_failing_put_ends_the_script_before_the_next_step(node_sh, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    script = Script().put(str(blocked / "sub" / "x.cfg"), "0:0", "0644", "x\n").step("after", "true")
    result = node_sh(script)
    assert result.returncode == 3
    assert f"@@ failed writing {blocked}/sub/x.cfg" in result.stdout
    assert steps(result.stdout) == []


def test_a_step_reports_its_status_and_output(node_sh):
    result = node_sh(
        Script()
        .step("reload-haproxy", "docker", "kill", "--signal", "USR2", "haproxy")
        .call("kha_step", "bad", "false")
    )
    assert [(s.name, s.returncode, s.output) for s in steps(result.stdout)] == [
        ("reload-haproxy", 0, "docker kill --signal USR2 haproxy"),
        ("bad", 1, ""),
    ]


def test_boot_reports_the_first_boots_marker_and_nothing_without_one(node_sh, tmp_path):
    marker = tmp_path / "boot-failed"
    script = Script().call("kha_boot", str(marker)).report(9444, [])
    assert parse_report(node_sh(script).stdout).boot_failed is None
    marker.write_text("docker pull haproxy:2.8.16 failed 13 times in 555 s: toomanyrequests\n")
    report = parse_report(node_sh(script).stdout)
    assert report.boot_failed == "docker pull haproxy:2.8.16 failed 13 times in 555 s: toomanyrequests"
