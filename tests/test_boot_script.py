"""The first-boot script (/etc/kubeadm-ha/boot.sh) under `sh`, with docker, apt-get, date and sleep stubbed:
retries with back-off for a bounded time, Docker installed only where missing, and the marker that
`ops status` reports written where a step gives up (and cleared once both containers run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cluster import plan
from userdata.render import render_boot_script

RATE_LIMIT = "Error response from daemon: toomanyrequests: You have reached your pull rate limit."

STUBS = {
    # A clock that only sleep moves: the back-off is measured, not waited for.
    "date": '#!/bin/sh\ncat "$KHA_TEST/clock"\n',
    "sleep": '#!/bin/sh\necho $(( $(cat "$KHA_TEST/clock") + $1 )) > "$KHA_TEST/clock"\n'
    'echo "$1" >> "$KHA_TEST/sleeps"\n',
    "docker": f"""#!/bin/sh
echo "$*" >> "$KHA_TEST/docker.log"
case "$1 $2" in
"image inspect") case " $HAS_IMAGES " in *" $3 "*) exit 0 ;; esac; exit 1 ;;
"pull --quiet")
    n=$(( $(cat "$KHA_TEST/pulls" 2>/dev/null || echo 0) + 1 ))
    echo $n > "$KHA_TEST/pulls"
    if [ "$PULL_FAILS" = always ] || [ "$n" -le "$PULL_FAILS" ]; then echo "{RATE_LIMIT}" >&2; exit 1; fi
    echo "sha256:0123"; exit 0 ;;
"inspect --type") for name; do :; done; case " $RUNNING " in *" $name "*) echo true ;; *) exit 1 ;; esac ;;
esac
""",
    "apt-get": '#!/bin/sh\necho "$*" >> "$KHA_TEST/apt.log"\n',
}
TOOLS = ("sh", "cat", "grep", "tail", "mkdir", "dirname", "rm", "printf", "echo")


@pytest.fixture
def boot(tmp_path):
    """Run the rendered script, its marker under tmp_path: (exit code, stderr, marker text or None)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    marker = tmp_path / "var" / "boot-failed"
    script = tmp_path / "boot.sh"
    text = render_boot_script().replace(f"marker={plan.BOOT_FAILED_MARK}\n", f"marker={marker}\n")
    assert text != render_boot_script()
    script.write_text(text)
    (tmp_path / "clock").write_text("1000\n")

    def run(*args: str, docker: bool = True, **env: str) -> tuple[int, str, str | None]:
        for name, stub in STUBS.items():
            if name != "docker" or docker:
                (bin_dir / name).write_text(stub)
                (bin_dir / name).chmod(0o755)
        if not docker:
            (bin_dir / "docker").unlink(missing_ok=True)
        environ = {"PATH": str(bin_dir), "KHA_TEST": str(tmp_path), "PULL_FAILS": "0", "HAS_IMAGES": "", **env}
        done = subprocess.run(
            [str(bin_dir / "sh"), str(script), *args], env=environ, capture_output=True, text=True, timeout=30
        )
        return done.returncode, done.stderr, marker.read_text() if marker.exists() else None

    return run


def sleeps(tmp_path: Path) -> list[int]:
    path = tmp_path / "sleeps"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_pull_that_fails_twice_then_succeeds_backs_off_and_writes_no_marker(boot, tmp_path):
    code, err, marker = boot("pull", "haproxy:2.8.16", PULL_FAILS="2")
    assert (code, marker) == (0, None), err
    assert sleeps(tmp_path) == [plan.BOOT_BACKOFF_FIRST_S, 2 * plan.BOOT_BACKOFF_FIRST_S]
    assert "docker pull haproxy:2.8.16 succeeded at try 3" in err and "toomanyrequests" in err


def test_a_pull_that_never_succeeds_gives_up_within_the_bound_and_names_the_image_in_the_marker(boot, tmp_path):
    code, err, marker = boot("pull", "haproxy:2.8.16", PULL_FAILS="always")
    waited = sum(sleeps(tmp_path))
    assert code == 1 and marker is not None
    assert waited <= plan.BOOT_RETRY_S and waited + plan.BOOT_BACKOFF_MAX_S > plan.BOOT_RETRY_S
    assert max(sleeps(tmp_path)) == plan.BOOT_BACKOFF_MAX_S
    tries = len(sleeps(tmp_path)) + 1
    assert marker == f"docker pull haproxy:2.8.16 failed {tries} times in {waited} s: {RATE_LIMIT}\n"


def test_an_image_already_on_the_node_is_not_pulled(boot, tmp_path):
    code, err, _ = boot("pull", "haproxy:2.8.16", "osixia/keepalived:2.0.20", HAS_IMAGES="haproxy:2.8.16")
    assert code == 0, err
    pulls = [line for line in (tmp_path / "docker.log").read_text().splitlines() if line.startswith("pull")]
    assert pulls == ["pull --quiet osixia/keepalived:2.0.20"]


def test_install_leaves_an_image_with_docker_alone_and_installs_docker_where_it_is_missing(boot, tmp_path):
    code, err, _ = boot("install")
    assert code == 0 and "docker is installed: nothing to install" in err
    assert not (tmp_path / "apt.log").exists()
    code, err, _ = boot("install", docker=False)
    assert code == 0, err
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert [c.split()[2] for c in calls] == ["update", "install"] and calls[1].endswith("docker.io")


def test_verify_writes_the_marker_for_a_container_not_running_and_clears_it_once_both_run(boot):
    code, _, marker = boot("verify", "haproxy", "keepalived", RUNNING="keepalived")
    assert code == 1 and marker is not None and marker.startswith("container haproxy is not running after boot")
    code, _, marker = boot("verify", "haproxy", "keepalived", RUNNING="haproxy keepalived")
    assert (code, marker) == (0, None)


def test_the_first_failure_of_a_boot_stays_in_the_marker(boot):
    boot("pull", "haproxy:2.8.16", PULL_FAILS="always")
    code, _, marker = boot("verify", "haproxy", "keepalived", RUNNING="keepalived")
    assert code == 1 and marker is not None and marker.startswith("docker pull haproxy:2.8.16 failed")
    # A new boot's install starts afresh.
    assert boot("install")[2] is None
