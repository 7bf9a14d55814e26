"""Run a node's userdata with the real cloud-init (Debian's), inside the node, as at first boot.

`cloud-init --file <user-data> single --name bootcmd` runs the every-boot commands (at the first
boot only: what they set lives in the node's network namespace, which the lab keeps across its
reboots); `single --name write_files` writes the files with their owner and
mode onto the node's disk; `single --name runcmd` turns runcmd into the instance's script; then
cloud-init's own `runparts` runs that script, each entry verbatim and in order, with DOCKER_HOST
set to the node's engine. That last step is all the `scripts_user` module does, but `single
--name scripts_user` finds nothing to run here: without a cached datasource `single` deletes the
/var/lib/cloud/instance link that scripts_user reads, and only `cloud-init init` writes that
cache, a stage that would also set the hostname and the network, which the lab must not. The text
given to cloud-init is the JSON's user_data with Terraform's escapes undone: what the VM's metadata
service would hand over.

What the lab leaves to the cloud image, and says so:
- the `packages` module (docker.io is installed on this machine, not per node);
- `systemctl enable --now docker`: the lab has started the node's engine before cloud-init
  runs; a `systemctl` on the node's PATH answers exactly that line (it checks the engine
  answers) and refuses anything else;
- `cloud-init init` (datasource, hostname, network): the instance is cloud-init's
  "iid-datasource-none".
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.world.engine import Engine

# In cloud-init's order: bootcmd (init stage, every boot), then write_files and runcmd (per instance).
MODULES = ("bootcmd", "write_files", "runcmd")
SCRIPTS = "/var/lib/cloud/instances/iid-datasource-none/scripts"
_RUNPARTS = "import sys; from cloudinit import subp; subp.runparts(sys.argv[1])"

_SYSTEMCTL = """\
#!/bin/sh
# The lab's stand-in for the cloud image's systemd: the engine is the lab's to start.
if [ "$*" = "enable --now docker" ]; then
    echo "lab: skipped 'systemctl $*': the lab started this node's Docker engine before cloud-init ran"
    exec docker info --format 'lab: engine {{.ServerVersion}} answers'
fi
echo "lab: 'systemctl $*' is not emulated" >&2
exit 1
"""


@dataclass(frozen=True)
class CloudInitRun:
    module: str
    returncode: int
    output: str


def shim_dir(nodedir: Path) -> Path:
    """Commands the lab puts first on the node's PATH while cloud-init runs."""
    d = nodedir / "shims"
    d.mkdir(parents=True, exist_ok=True)
    script = d / "systemctl"
    script.write_text(_SYSTEMCTL)
    script.chmod(0o755)
    return d


def run_userdata(engine: Engine, user_data: str) -> list[CloudInitRun]:
    """bootcmd, write_files, then runcmd, as cloud-init does at first boot; raises on a failed module."""
    path = engine.nodedir / "user-data"
    path.write_text(user_data)
    shims = shim_dir(engine.nodedir)
    env = {**engine.env, "PATH": f"{shims}:{engine.env['PATH']}"}
    runs = []
    log = engine.nodedir / "cloud-init.log"
    steps = {m: ["cloud-init", "--file", str(path), "single", "--name", m, "--frequency", "always"] for m in MODULES}
    steps["scripts_user (runparts)"] = ["python3", "-c", _RUNPARTS, SCRIPTS]
    for module, command in steps.items():
        argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *command]
        done = subprocess.run(engine.enter(argv), capture_output=True, text=True, timeout=120)
        output = done.stdout + done.stderr
        with open(log, "a") as f:
            f.write(f"=== {module}: exit {done.returncode}\n{output}")
        runs.append(CloudInitRun(module, done.returncode, output))
        if done.returncode != 0:
            raise RuntimeError(
                f"{engine.name}: cloud-init module {module} failed ({done.returncode}): {output.strip()[-500:]}"
            )
    return runs
