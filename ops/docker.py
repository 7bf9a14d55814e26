"""Read a userdata `docker run` line, and derive from it the throw-away run that validates new files.

The validation runs the target image with the line's own network, capabilities, environment and
mounts, except that each host folder the userdata writes is replaced by a staged copy: so a file
is checked where and how its container will read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from userdata.render import RUN_LABEL

# `docker run` options the userdata may use, by whether they take a value. Anything else is refused
# rather than guessed: a line the tool cannot read is a line it must not recreate a container from.
VALUE_OPTIONS = frozenset(
    {"--restart", "--network", "--name", "--label", "--volume", "-v", "--cap-add", "--cap-drop", "--env", "-e",
     "--ulimit", "--user", "-u", "--stop-signal", "--stop-timeout", "--log-driver", "--log-opt", "--entrypoint",
     "--pid", "--memory", "--cpus", "--sysctl", "--security-opt", "--tmpfs", "--hostname"}
)
FLAG_OPTIONS = frozenset({"--detach", "-d", "--rm", "--init", "--read-only", "--privileged"})
# Options that belong to the long-running container, not to a throw-away check.
_NOT_FOR_CHECKS = frozenset({"--detach", "-d", "--restart", "--name", "--label", "--entrypoint", "--rm"})


@dataclass(frozen=True)
class RunLine:
    argv: tuple[str, ...]
    options: tuple[tuple[str, str | None], ...]
    image: str
    args: tuple[str, ...]

    def values(self, option: str) -> list[str]:
        return [v for o, v in self.options if o == option and v is not None]

    @property
    def name(self) -> str:
        names = self.values("--name")
        if len(names) != 1:
            raise ValueError(f"docker run line without exactly one --name: {' '.join(self.argv)}")
        return names[0]

    @property
    def label(self) -> str | None:
        """The value of the line's RUN_LABEL, which the container created from it carries."""
        for label in self.values("--label"):
            key, _, value = label.partition("=")
            if key == RUN_LABEL:
                return value
        return None

    def mounts(self) -> list[tuple[str, str, str]]:
        """(host, container, mode) of each --volume."""
        out = []
        for volume in self.values("--volume") + self.values("-v"):
            host, container, *mode = volume.split(":")
            out.append((host, container, mode[0] if mode else "rw"))
        return out

    def check_argv(self, staged: dict[str, str], entrypoint: str, *args: str) -> list[str]:
        """A `docker run --rm` of the same image and options with `staged` host folders swapped in."""
        argv = ["docker", "run", "--rm"]
        for option, value in self.options:
            if option in _NOT_FOR_CHECKS:
                continue
            if option in ("--volume", "-v") and value is not None:
                host, rest = value.split(":", 1)
                value = f"{staged.get(host, host)}:{rest}"
            argv += [option] if value is None else [option, value]
        return [*argv, "--entrypoint", entrypoint, self.image, *args]


def parse_run_line(argv: list[str]) -> RunLine:
    """Split `docker run [options] image [args]`; raises ValueError naming an option it does not know."""
    if argv[:2] != ["docker", "run"]:
        raise ValueError(f"not a docker run line: {' '.join(argv)}")
    options: list[tuple[str, str | None]] = []
    i = 2
    while i < len(argv) and argv[i].startswith("-"):
        option, eq, inline = argv[i].partition("=")
        if option in FLAG_OPTIONS and not eq:
            options.append((option, None))
            i += 1
        elif option in VALUE_OPTIONS:
            if eq:
                options.append((option, inline))
                i += 1
            elif i + 1 < len(argv):
                options.append((option, argv[i + 1]))
                i += 2
            else:
                raise ValueError(f"docker run option {option} has no value")
        else:
            raise ValueError(f"docker run option {option} is not one the tool knows how to reproduce")
    if i >= len(argv):
        raise ValueError(f"docker run line without an image: {' '.join(argv)}")
    return RunLine(tuple(argv), tuple(options), argv[i], tuple(argv[i + 1 :]))
