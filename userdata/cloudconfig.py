"""The one reader (and editor) of cloud-config text: what a node's user_data writes and runs.

In the synthesized JSON, user_data is Terraform template text: a literal `${` or `%{` is written
`$${` or `%%{`. `escape` and `unescape` turn one form into the other; the readers here take the
JSON's form and undo the escapes themselves. The edits (the lab's variants) change lines of the
text in place, so that everything else stays byte for byte as synthesized, and read the result back.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from userdata.render import RUN_LABEL

HEADER = "#cloud-config"


class CloudConfigError(ValueError):
    """The text is not cloud-config this project can read, or an edit does not apply; one line."""


@dataclass(frozen=True)
class WrittenFile:
    path: str
    content: str
    owner: str
    permissions: str


# A Terraform template sequence Terraform would still interpret: `${` or `%{` not escaped by
# doubling (`$${`, `%%{`).
_TEMPLATE = re.compile(r"(?<![$%])[$%]\{")


def escape(text: str) -> str:
    """Text as user_data in Terraform JSON must carry it: `${` and `%{` doubled."""
    return text.replace("${", "$${").replace("%{", "%%{")


def unescape(user_data: str) -> str:
    """user_data as the VM's metadata service hands it over: Terraform's `$${` and `%%{` undone."""
    return user_data.replace("$${", "${").replace("%%{", "%{")


def load(user_data: str) -> dict[str, Any]:
    """The cloud-config as the node receives it (Terraform's escapes undone), parsed.

    Raises CloudConfigError where the text is not literal cloud-config: a Terraform reference left
    in it (Neutron-allocated addresses are only known to the state).
    """
    left = _TEMPLATE.search(user_data)
    if left:
        line = user_data[: left.start()].count("\n") + 1
        raise CloudConfigError(
            f"user_data line {line} still holds a Terraform template sequence (read it from the state instead)"
        )
    text = unescape(user_data)
    if not text.startswith(HEADER):
        raise CloudConfigError("user_data is not cloud-config")
    return yaml.safe_load(text)


def dump(config: dict[str, Any]) -> str:
    """user_data (Terraform's form) for a cloud-config given as data: `load` read back gives `config`."""
    return escape(f"{HEADER}\n" + yaml.safe_dump(config, sort_keys=False, width=1000))


def written_files(user_data: str) -> dict[str, WrittenFile]:
    """The cloud-config's write_files as the node receives them, keyed by path on the node.

    Raises CloudConfigError as `load` does, and for an encoding cloud-init would decode.
    """
    files = {}
    for entry in load(user_data).get("write_files", []):
        content = entry.get("content", "")
        encoding = entry.get("encoding", "text/plain")
        if encoding in ("b64", "base64"):
            content = base64.b64decode(content).decode()
        elif encoding != "text/plain":
            raise CloudConfigError(f"write_files {entry['path']}: encoding {encoding!r} is not supported")
        path = entry["path"]
        files[path] = WrittenFile(path, content, entry.get("owner", "root:root"), str(entry.get("permissions", "0644")))
    return files


_REFERENCE = re.compile(r"(?<![$%])\$\{[^}]*\}")


def written_file_as_synthesized(user_data: str, path: str) -> str:
    """One write_files entry's content as the JSON carries it: Terraform's escapes undone, but its
    references (addresses Neutron allocates at deploy) left as they are, for a person to read."""
    refs: list[str] = []

    def hold(match: re.Match[str]) -> str:
        refs.append(match.group(0))
        return f"kha-reference-{len(refs) - 1}-"

    files = written_files(_REFERENCE.sub(hold, user_data))
    if path not in files:
        raise CloudConfigError(f"user_data writes no {path}")
    return re.sub(r"kha-reference-(\d+)-", lambda m: refs[int(m.group(1))], files[path].content)


# The `docker run` options a userdata line may use, by whether they take a value. Anything else is
# refused, not guessed: a flag taken for an option with a value swallows the image name, and the
# operator's tool must never recreate a container from a line it misread.
_VALUE_OPTIONS = frozenset(
    {
        "--restart",
        "--network",
        "--name",
        "--label",
        "-l",
        "--volume",
        "-v",
        "--mount",
        "--cap-add",
        "--cap-drop",
        "--env",
        "-e",
        "--env-file",
        "--ulimit",
        "--user",
        "-u",
        "--stop-signal",
        "--stop-timeout",
        "--log-driver",
        "--log-opt",
        "--entrypoint",
        "--pid",
        "--memory",
        "-m",
        "--cpus",
        "--sysctl",
        "--security-opt",
        "--tmpfs",
        "--hostname",
        "-h",
        "--workdir",
        "-w",
        "--publish",
        "-p",
        "--device",
        "--add-host",
        "--dns",
        "--health-cmd",
        "--health-interval",
        "--health-retries",
        "--health-timeout",
        "--health-start-period",
    }
)
_FLAG_OPTIONS = frozenset(
    {
        "--detach",
        "-d",
        "--rm",
        "--init",
        "--read-only",
        "--privileged",
        "--interactive",
        "-i",
        "--tty",
        "-t",
        "--publish-all",
        "-P",
        "--oom-kill-disable",
        "--no-healthcheck",
        "--sig-proxy",
    }
)


@dataclass(frozen=True)
class DockerRun:
    """One `docker run` entry of runcmd: its options (in order), image and command arguments."""

    argv: tuple[str, ...]
    options: tuple[tuple[str, str | None], ...]
    image: str
    args: tuple[str, ...]

    def values(self, option: str) -> list[str]:
        return [v for o, v in self.options if o == option and v is not None]

    @property
    def name(self) -> str | None:
        names = self.values("--name")
        if len(names) > 1:
            raise CloudConfigError(f"docker run line with {len(names)} --name options: {' '.join(self.argv)}")
        return names[0] if names else None

    @property
    def label(self) -> str | None:
        """The value of the line's RUN_LABEL, which the container created from it carries."""
        for label in self.values("--label") + self.values("-l"):
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


def parse_docker_run(argv: list[str] | tuple[str, ...]) -> DockerRun:
    """Split `docker run [options] image [args]`; raises CloudConfigError naming an option it does
    not know, and for a line without an image."""
    if list(argv[:2]) != ["docker", "run"]:
        raise CloudConfigError(f"not a docker run command: {list(argv)}")
    options: list[tuple[str, str | None]] = []
    i = 2
    while i < len(argv) and argv[i].startswith("-"):
        option, eq, inline = argv[i].partition("=")
        if eq and not option.startswith("--"):
            option, inline = argv[i], ""  # `-e=x` is not how docker reads short options: refused below
        if option in _VALUE_OPTIONS and eq:
            options.append((option, inline))
        elif option in _VALUE_OPTIONS and i + 1 < len(argv):
            options.append((option, argv[i + 1]))
            i += 1
        elif option in _VALUE_OPTIONS:
            raise CloudConfigError(f"docker run option {option} has no value: {list(argv)}")
        elif option in _FLAG_OPTIONS:
            options.append((option, inline if eq else None))
        else:
            raise CloudConfigError(
                f"docker run option {option} is not one this project reads (refused rather than guessed)"
            )
        i += 1
    if i >= len(argv):
        raise CloudConfigError(f"docker run without an image: {list(argv)}")
    return DockerRun(tuple(argv), tuple(options), argv[i], tuple(argv[i + 1 :]))


def _is_docker_run(entry: object) -> bool:
    return isinstance(entry, list) and entry[:2] == ["docker", "run"]


def docker_runs(user_data: str) -> dict[str, DockerRun]:
    """The runcmd's `docker run` entries, keyed by container name (each named, each name once)."""
    out: dict[str, DockerRun] = {}
    for entry in load(user_data).get("runcmd", []) or []:
        if _is_docker_run(entry):
            run = parse_docker_run([str(a) for a in entry])
            if run.name is None:
                raise CloudConfigError(f"runcmd runs a container without --name: {entry}")
            if run.name in out:
                raise CloudConfigError(f"runcmd runs two containers named {run.name}")
            out[run.name] = run
    return out


def runcmd_docker_run(config: dict[str, Any], container: str) -> list[str]:
    """The runcmd entry (the list itself, to edit in place) that runs `container`, in a loaded cloud-config."""
    found = [e for e in config.get("runcmd", []) or [] if _is_docker_run(e) and parse_docker_run(e).name == container]
    if len(found) != 1:
        raise CloudConfigError(f"expected one docker run line for {container}, found {len(found)}")
    return found[0]


# --- Edits of the text: one line changed in place, the rest byte for byte as it was.

_FLOW_ENTRY = re.compile(r"^(\s*- )(\[.*\])\s*$")  # a runcmd entry written as a one-line flow sequence


def with_docker_run(user_data: str, container: str, edit: Callable[[list[str]], list[str]]) -> str:
    """user_data whose `docker run` line for `container` is `edit(argv)`.

    The line is found in the text (one runcmd entry written as a one-line flow sequence, as the
    template renders it), rewritten as one, and the result is read back."""
    lines = user_data.split("\n")
    hits = 0
    for i, line in enumerate(lines):
        m = _FLOW_ENTRY.match(line)
        if not m:
            continue
        argv = yaml.safe_load(m.group(2))
        if not (_is_docker_run(argv) and parse_docker_run(argv).name == container):
            continue
        edited = edit(list(argv))
        if edited == argv:
            raise CloudConfigError(f"the {container} line does not change ({argv})")
        lines[i] = m.group(1) + json.dumps(edited)
        hits += 1
    if hits != 1:
        raise CloudConfigError(f"expected one docker run line for {container}, found {hits}")
    out = "\n".join(lines)
    if docker_runs(out)[container].argv != tuple(edited):
        raise CloudConfigError("the edited line does not read back")
    return out


def with_file_line(user_data: str, path: str, old: str, new: str) -> str:
    """user_data in which one line of the file `path` reads `new` instead of `old`: a change as an
    edited template would make it. The line is found by its text without indentation, must be the
    only such line of the user_data, and keeps its indentation; the result is read back to check
    that only that file changed."""
    lines = user_data.split("\n")
    hits = [i for i, line in enumerate(lines) if line.strip() == old]
    if len(hits) != 1:
        raise CloudConfigError(f"expected one line {old!r} in user_data, found {len(hits)}")
    line = lines[hits[0]]
    lines[hits[0]] = line[: len(line) - len(line.lstrip())] + new
    out = "\n".join(lines)
    before, after = written_files(user_data), written_files(out)
    if path not in before or {p for p in before if before[p] != after[p]} != {path}:
        raise CloudConfigError(f"the line {old!r} is not in {path} alone")
    return out
