"""Derive, from a userdata `docker run` line, the throw-away run that validates new files.

The validation runs the target image with the line's own network, capabilities, environment and
mounts, except that each host folder the userdata writes is replaced by a staged copy: so a file
is checked where and how its container will read it. The line itself is read by
`userdata.cloudconfig.parse_docker_run`, which refuses options it does not know rather than guess.
"""

from __future__ import annotations

from userdata.cloudconfig import DockerRun

# Options that belong to the long-running container, not to a throw-away check.
_NOT_FOR_CHECKS = frozenset({"--detach", "-d", "--restart", "--name", "--label", "-l", "--entrypoint", "--rm"})


def check_argv(run: DockerRun, staged: dict[str, str], entrypoint: str, *args: str) -> list[str]:
    """A `docker run --rm` of the line's image and options with `staged` host folders swapped in."""
    argv = ["docker", "run", "--rm"]
    for option, value in run.options:
        if option in _NOT_FOR_CHECKS:
            continue
        if option in ("--volume", "-v") and value is not None:
            host, rest = value.split(":", 1)
            value = f"{staged.get(host, host)}:{rest}"
        argv += [option] if value is None else [option, value]
    return [*argv, "--entrypoint", entrypoint, run.image, *args]
