"""The loopback cloud as a playground: `cdktf deploy` in a copy of the project, then the VIP and the
booted nodes reached from the namespaces `cloud.json` names. The deploy tests and the benchmark
(`python -m cloud.bench --endpoint`) use it; it runs in the project's virtualenv, as root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cloud import paths

USER = "ubuntu"  # the image's default user, whose authorized_keys hold the key pair's public key
# The hypervisor's log lines (lab/hypervisor.py) that say a node is up, and what its boot waited for.
BOOTED = re.compile(r"^\S+ (\S+): booted at .* \(([\d.]+) s\)$")
LOCK_TAKEN = re.compile(r"^\S+ lab lock taken after ([\d.]+) s$")
BOOT_WAIT_S = 1800.0  # a boot waits up to this long for a lab elsewhere on the machine (its lock)


@dataclass(frozen=True)
class Reach:
    """cloud.json: how to reach what the cloud runs."""

    clouds_yaml: str
    cloud: str
    client_netns: str | None
    admin_netns: str | None
    ssh_key: str

    @classmethod
    def read(cls) -> Reach:
        return cls(**json.loads(paths.CLOUD_JSON.read_text()))


def project_copy(dest: Path, root: Path = paths.ROOT) -> Path:
    """The project's files as a fresh clone has them, its installed tools linked, not copied."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    for tool in (".venv", "node_modules", ".tools", ".stamps"):
        (dest / tool).symlink_to(root / tool)
    return dest


def environment(config: str, cli: str = "cdktf") -> dict[str, str]:
    """What `make deploy` exports, for CONFIG `config` (relative to the project) and the cloud's
    clouds.yaml; `cli` cdktn runs CDK Terrain (TOOLCHAIN=cdktn), the engine is ENGINE's (tfcheck.engine)."""
    from tfcheck.engine import engine  # the project's, in its virtualenv

    root = paths.ROOT
    return {
        **os.environ,
        "PATH": os.pathsep.join(
            [
                str(root / ".tools" / "bin"),
                str(root / "node_modules" / ".bin"),
                str(root / ".tools" / "cdktn" / "cli" / "node_modules" / ".bin"),
                str(root / ".venv" / "bin"),
                os.environ["PATH"],
            ]
        ),
        "CONFIG": config,
        "OS_CLOUD": paths.CLOUD,
        "OS_CLIENT_CONFIG_FILE": str(paths.CLOUDS_YAML),
        "TF_CLI_CONFIG_FILE": str(root / ".stamps" / "terraformrc"),
        # as the Makefile: `terraform providers lock`, which cdktf runs, asks the registry otherwise
        "TF_CLI_ARGS_providers_lock": f"-fs-mirror={root / '.tools' / 'providers'}",
        "PIPENV_VENV_IN_PROJECT": "1",
        "PIPENV_NOSPIN": "1",
        "PIPENV_YES": "1",
        "CHECKPOINT_DISABLE": "1",
        "DISABLE_VERSION_CHECK": "1",
        "CDKTF_DISABLE_PLUGIN_CACHE_ENV": "1",
        "CI": "1",
        # What the Makefile sets from ENGINE: cdktf runs this command for every Terraform step.
        "TERRAFORM_BINARY_NAME": engine(),
        "TOOLCHAIN": cli,
    }


def cdktf(
    project: Path,
    name: str,
    config: dict[str, Any],
    *args: str,
    cli: str = "cdktf",
    flags: tuple[str, ...] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`cdktf <args>` (or `cdktn`) in `project` with `config` as config/<name>.yaml; `flags` by
    default approve deploy and destroy up front. Raises on failure."""
    (project / "config" / f"{name}.yaml").write_text(yaml.safe_dump(config))
    if flags is None:
        flags = ("--auto-approve",) if args[0] in ("deploy", "destroy") else ()
    done = subprocess.run(
        [cli, *args, *flags],
        cwd=project,
        env=environment(f"config/{name}.yaml", cli),
        text=True,
        capture_output=True,
        timeout=1200,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{cli} {args[0]} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
        )
    return done


def terraform(stack_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Terraform in a deployed stack's folder, as a user runs it there (e.g. `apply -replace`)."""
    env = environment("")
    return subprocess.run(
        [env["TERRAFORM_BINARY_NAME"], *args, "-no-color"],
        cwd=stack_dir,
        env=env,
        text=True,
        capture_output=True,
        timeout=1200,
    )


def outputs(stack_dir: Path) -> dict[str, Any]:
    done = terraform(stack_dir, "output", "-json")
    if done.returncode != 0:
        raise AssertionError(f"terraform output failed: {done.stderr[-2000:]}")
    return {k: v["value"] for k, v in json.loads(done.stdout).items()}


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    if ns is None:
        raise AssertionError("the cloud runs no namespaces (cloud.json): booted servers do not run")
    return ["ip", "netns", "exec", ns, *argv]


def readyz(ns: str | None, address: str, port: int, source: str | None = None, timeout: float = 2.0) -> str | None:
    """`curl -k https://address:port/readyz` from namespace `ns` (from `source` when given): the body, or None."""
    argv = ["curl", "-sk", "--max-time", str(timeout), f"https://{address}:{port}/readyz"]
    if source:
        argv[1:1] = ["--interface", source]
    done = subprocess.run(in_ns(ns, argv), capture_output=True, text=True, timeout=timeout + 10)
    return done.stdout if done.returncode == 0 else None


def first_answer(ns: str | None, address: str, port: int, within: float, source: str | None = None) -> float | None:
    """Seconds until the first answer to /readyz (None: none within `within`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if readyz(ns, address, port, source, timeout=1.0) is not None:
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def ssh(
    reach: Reach, address: str, command: str, ns: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`command` on a node over SSH from the admin namespace (or `ns`), with the key pair's private key."""
    argv = ["ssh", "-i", reach.ssh_key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
    argv += ["-o", f"UserKnownHostsFile={paths.KNOWN_HOSTS}", "-o", "GlobalKnownHostsFile=/dev/null"]
    argv += ["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5", f"{USER}@{address}", command]
    return subprocess.run(in_ns(ns or reach.admin_netns, argv), capture_output=True, text=True, timeout=timeout)


def ops(
    reach: Reach, project: Path, name: str, stack: Path, *args: str, ns: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m ops` in the admin namespace (or `ns`) against a deployed stack, with the cloud's key."""
    argv = [str(paths.PROJECT_PYTHON), "-m", "ops", *args[:1], "--config", f"config/{name}.yaml", "--stack", str(stack)]
    argv += ["--ssh-user", USER, "--ssh-option", f"IdentityFile={reach.ssh_key}", "--ssh-option", "IdentitiesOnly=yes"]
    argv += [
        "--ssh-option",
        f"UserKnownHostsFile={paths.KNOWN_HOSTS}",
        "--ssh-option",
        "GlobalKnownHostsFile=/dev/null",
    ]
    argv += list(args[1:])
    env = environment(f"config/{name}.yaml")
    return subprocess.run(
        in_ns(ns or reach.admin_netns, argv), cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def as_nodes_run_it(stack_json: Path) -> Path:
    """The deployed JSON with each node's user_data as its node runs it, beside it, for the operator's
    tool to compare the nodes with (Terraform reads only *.tf.json there): the addresses Neutron
    allocated and the floating IP filled in from the stack's outputs, then the hypervisor's
    open-files fit (`lab.world.harness.fit_user_data`)."""
    from lab.world.harness import fit_user_data  # the lab's, in the project's virtualenv
    from userdata.cloudconfig import escape
    from userdata.stack import SynthesizedStack, with_user_data

    doc = json.loads(stack_json.read_text())
    stack = SynthesizedStack(doc)
    deployed = outputs(stack_json.parent)
    allocated, fip = deployed.get("node_addresses") or {}, deployed.get("floating_ip")
    out = stack_json.with_name("as-run.json")
    as_run = with_user_data(doc, lambda inst: escape(fit_user_data(stack.node(inst, allocated, fip).user_data)[0]))
    out.write_text(json.dumps(as_run, indent=1))
    return out


def hypervisor_log(run_folder: Path) -> list[str]:
    path = run_folder / "hypervisor.log"
    return path.read_text().splitlines() if path.exists() else []


@dataclass(frozen=True)
class Boots:
    seconds: dict[str, float]  # each node's boot as the hypervisor logged it
    lock_wait: float  # how long the boots waited for the lab lock (another lab on the machine)
    after: float  # seconds from the call until the last node was up


def wait_booted(run_folder: Path, names: list[str], since: int, within: float = BOOT_WAIT_S) -> Boots:
    """Wait until the hypervisor has logged each of `names` booted, in its log after line `since`."""
    t0 = time.monotonic()
    while True:
        lines = hypervisor_log(run_folder)[since:]
        seconds = {m[1]: float(m[2]) for line in lines if (m := BOOTED.match(line))}
        if set(names) <= set(seconds):
            waits = [float(m[1]) for line in lines if (m := LOCK_TAKEN.match(line))]
            return Boots(seconds, sum(waits), time.monotonic() - t0)
        if time.monotonic() - t0 > within:
            tail = "\n".join(hypervisor_log(run_folder)[-30:])
            raise AssertionError(f"nodes {sorted(set(names) - set(seconds))} not booted in {within:.0f} s:\n{tail}")
        time.sleep(1)
