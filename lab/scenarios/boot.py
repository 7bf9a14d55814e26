"""Boot drills: one node provisioned again (its containers and its haproxy image gone, its userdata run
by cloud-init as at first boot) while its registry refuses pulls: a few times, or for good.

The registry is a `docker` on cloud-init's PATH that refuses the first pulls with a rate-limit error
and then serves the image (it loads the lab's image tarball); every other docker command goes to the
node's engine unchanged. The boot script's bound and first wait are shortened in the userdata
(the node and the operator's JSON alike), so a drill takes seconds, not BOOT_RETRY_S.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from cluster import plan
from lab.world import cloudinit
from lab.world.admin import Operator, ToolRun
from lab.world.harness import Lab
from userdata.cloudconfig import docker_runs
from userdata.render import CONTAINERS, HAPROXY_CONTAINER
from userdata.stack import with_user_data

RETRY_S = 12  # the drill's bound: waits of 1, 2, 4 s, then the next (8 s) would pass it
FIRST_WAIT_S = 1

_REGISTRY = """\
#!/bin/sh
# The lab's registry for a boot drill: refuses the first {refusals} pulls, then serves the image.
if [ "$1" = pull ]; then
    n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 ))
    echo "$n" > {counter}
    if [ {refusals} = never ] || [ "$n" -le {refusals} ]; then
        echo "Error response from daemon: toomanyrequests: You have reached your pull rate limit (lab, pull $n)" >&2
        exit 1
    fi
    exec {docker} load --quiet --input {tarball}
fi
exec {docker} "$@"
"""


@dataclass(frozen=True)
class BootResult:
    node: str
    image: str  # the image the registry refused
    pulls: int  # pull attempts the registry saw
    cloud_init_error: str | None  # what cloud-init reported, None when every module passed
    status: ToolRun  # `python -m ops status --json` afterwards


def shortened(user_data: str) -> str:
    """The userdata with the boot script's bound and first wait cut to the drill's."""
    out = user_data.replace(f"retry_s={plan.BOOT_RETRY_S}\n", f"retry_s={RETRY_S}\n")
    out = out.replace(f"first_wait_s={plan.BOOT_BACKOFF_FIRST_S}\n", f"first_wait_s={FIRST_WAIT_S}\n")
    if out.count(f"retry_s={RETRY_S}\n") != 1 or out.count(f"first_wait_s={FIRST_WAIT_S}\n") != 1:
        raise ValueError("the boot script's retry_s= and first_wait_s= lines are not in the userdata")
    return out


def registry_refuses(lab: Lab, op: Operator, name: str, refusals: int | None) -> BootResult:
    """Provision `name` again while the registry refuses `refusals` pulls (None: every pull)."""
    node = lab.nodes[name]
    engine = node.engine
    user_data = shortened(lab.stack.nodes[list(lab.nodes).index(name)].user_data)
    image = docker_runs(user_data)[HAPROXY_CONTAINER].image
    engine.docker("rm", "--force", *CONTAINERS)
    engine.docker("image", "rm", image)
    counter = engine.nodedir / "registry-pulls"
    counter.unlink(missing_ok=True)
    shim = cloudinit.shim_dir(engine.nodedir) / "docker"
    docker = shutil.which("docker", path="/usr/bin:/bin") or "/usr/bin/docker"
    shim.write_text(
        _REGISTRY.format(
            refusals="never" if refusals is None else refusals,
            counter=counter,
            docker=docker,
            tarball=lab.image_tarball,
        )
    )
    shim.chmod(0o755)
    error = None
    try:
        cloudinit.run_userdata(engine, user_data)
    except RuntimeError as err:
        error = str(err)
    finally:
        shim.unlink()
    # The operator's JSON as the nodes run it: this node's userdata shortened, the others' unchanged.
    edited = with_user_data(lab.doc, lambda inst: shortened(inst.user_data) if inst.name == name else inst.user_data)
    stack = lab.write_stack(edited, f"boot-{name}")
    status = op.run("status", stack, "--json")
    pulls = int(counter.read_text()) if counter.exists() else 0
    return BootResult(name, image, pulls, error, status)


def restore(lab: Lab, op: Operator, name: str) -> ToolRun:
    """The node provisioned again with its images at hand, as the lab built it; status afterwards."""
    engine = lab.nodes[name].engine
    engine.docker("rm", "--force", *CONTAINERS)
    engine.docker("load", "--quiet", "--input", str(lab.image_tarball))
    cloudinit.run_userdata(engine, lab.stack.nodes[list(lab.nodes).index(name)].user_data)
    # The containers have just started: status once haproxy's checks and keepalived have settled
    # (right away, a loaded machine caught the node's haproxy still seeing apiservers DOWN).
    lab.wait_steady()
    return op.run("status", lab.stack_json, "--json")
