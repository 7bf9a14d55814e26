"""A new user's first day, verbatim: docs/cloud.md's commands deploy the example to the loopback
cloud, a change Terraform must refuse ends in the line naming `allow_destroy`, and the README's
Teardown removes everything; run as a person runs them, in a terminal (a pty: cdktf asks for approval
there, and this answers it as a person would, with Enter on "Approve"), in a copy of the project,
with none of the variables `make` exports set beforehand (but ENGINE, when the run sets it).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cloud import paths
from tests.conftest import ROOT
from tests.deploy.test_cloud_cdktf import project_copy

pytestmark = pytest.mark.cloud

# cdktf's approval prompt (cdktf-cli's deploy/destroy UI), and the key that picks its first choice.
APPROVAL = "Please review the diff output above for"
ENTER = b"\r"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
HINT = "note: Terraform refused to destroy or replace a protected resource: this project's switch is allow_destroy"


def sh_blocks(page: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", page.read_text(), re.S | re.M)


def a_new_users_env() -> dict[str, str]:
    """The login environment: no project folder on PATH, nothing the Makefile or the tests export."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    env = {"HOME": os.environ["HOME"], "PATH": path, "TERM": "xterm", "LANG": "C.UTF-8"}
    # The engine is the user's choice (docs/toolchain.md): under make test-open, OpenTofu.
    return env | ({"ENGINE": os.environ["ENGINE"]} if "ENGINE" in os.environ else {})


def with_the_cloud() -> dict[str, str]:
    """The login environment with docs/cloud.md's two exports, for the commands run without a pty."""
    return {**a_new_users_env(), "OS_CLIENT_CONFIG_FILE": str(paths.CLOUDS_YAML), "OS_CLOUD": paths.CLOUD}


def in_a_terminal(project: Path, script: str, timeout: float = 1500) -> tuple[int, str]:
    """bash runs `script` in `project` on a pty; each approval prompt is answered with Enter."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=project,
        env=a_new_users_env(),
        stdin=child,
        stdout=child,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    seen, answered, deadline = b"", 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the pty's last writer has gone
                    break
                seen += chunk
                prompts = ANSI.sub("", seen.decode(errors="replace")).count(APPROVAL)
                if prompts > answered:
                    time.sleep(1)  # the choices render after the question
                    os.write(main, ENTER)
                    answered = prompts
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"still running after {timeout} s:\n{ANSI.sub('', seen.decode(errors='replace'))[-4000:]}")
    finally:
        os.close(main)
    return proc.wait(timeout=60), ANSI.sub("", seen.decode(errors="replace"))


def servers(cloud) -> list[str]:
    return cloud.sdk("result = sorted(s.name for s in conn.compute.servers(all_projects=True))", admin=True)


@pytest.fixture(scope="module")
def project(cloud, tmp_path_factory):
    project = project_copy(tmp_path_factory.mktemp("first-day") / "project")
    # make writes into .stamps (the CLI config names the folder it runs in, the cdktf logs): a copy
    # of its own, so that this checkout's stays as it is.
    (project / ".stamps").unlink()
    shutil.copytree(ROOT / ".stamps", project / ".stamps", symlinks=True)
    ours = (ROOT / ".stamps" / "terraformrc").read_text()
    yield project
    assert (ROOT / ".stamps" / "terraformrc").read_text() == ours, "the copy's make changed this checkout's"
    if servers(cloud):  # a test failed before the teardown: leave the shared cloud as found
        example = project / "config" / "example.yaml"
        example.write_text(example.read_text() + "allow_destroy: true\n")
        env = with_the_cloud()
        subprocess.run(
            ["make", "destroy", "AUTO_APPROVE=1"], cwd=project, env=env, stdin=subprocess.DEVNULL, timeout=900
        )


def test_docs_cloud_md_deploys_the_example_as_written(cloud, project):
    [block] = [b for b in sh_blocks(ROOT / "docs" / "cloud.md") if "make deploy" in b]
    assert "OS_CLIENT_CONFIG_FILE=$PWD/.stamps/cloud/clouds.yaml" in block
    code, out = in_a_terminal(project, block)
    assert code == 0, out[-6000:]
    assert "has what demo needs" in out, "make deploy runs preflight first"
    assert "Apply complete!" in out
    assert servers(cloud) == ["demo-cp-1", "demo-cp-2", "demo-cp-3"]
    assert (project / "terraform.demo.tfstate").is_file()


def test_without_a_terminal_deploy_stops_in_one_line_before_cdktf_runs(cloud, project):
    env = with_the_cloud()
    done = subprocess.run(
        ["make", "deploy"], cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: make deploy: no terminal for cdktf's approval prompt; run it in a terminal, "
        "or review make diff and run make deploy AUTO_APPROVE=1"
    ]
    assert "Raw mode is not supported" not in done.stdout + done.stderr


def make_diff(project: Path) -> tuple[int, str]:
    block = "export OS_CLIENT_CONFIG_FILE=$PWD/.stamps/cloud/clouds.yaml OS_CLOUD=kha-test\nmake diff\n"
    return in_a_terminal(project, block, timeout=900)


def test_a_protected_change_ends_with_the_line_that_names_allow_destroy(cloud, project):
    code, out = make_diff(project)
    assert code == 0 and HINT not in out, "the negative control: nothing to refuse, no hint"
    example = project / "config" / "example.yaml"
    original = example.read_text()
    assert "anti_affinity: hard" in original
    example.write_text(original.replace("anti_affinity: hard", "anti_affinity: soft"))
    try:
        code, out = make_diff(project)
    finally:
        example.write_text(original)
    assert code != 0
    assert "prevent_destroy" in out, "Terraform's own refusal"
    assert out.count(HINT) == 1, out[-4000:]


def test_the_readme_teardown_removes_everything(cloud, project):
    [block] = [b for b in sh_blocks(ROOT / "README.md") if "make destroy" in b]
    first, *commands = block.splitlines()
    assert first.startswith("# in the cluster's YAML: allow_destroy: true")
    example = project / "config" / "example.yaml"
    example.write_text(example.read_text() + "allow_destroy: true\n")
    script = "export OS_CLIENT_CONFIG_FILE=$PWD/.stamps/cloud/clouds.yaml\n" + "\n".join(commands).replace(
        "OS_CLOUD=mycloud", f"OS_CLOUD={paths.CLOUD}"
    )
    code, out = in_a_terminal(project, script)
    assert code == 0, out[-6000:]
    assert "Destroy complete!" in out
    assert servers(cloud) == []
