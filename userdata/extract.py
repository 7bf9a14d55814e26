"""Read the node files and commands back out of a synthesized stack: for the operator's tool and the lab.

    python -m userdata.extract cdktf.out/stacks/demo/cdk.tf.json demo-cp-2 ./demo-cp-2

writes that node's haproxy.cfg, keepalived.conf and check script, exactly as its cloud-config
carries them, under the given folder (by their path on the node).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from userdata.render import RUN_LABEL

INSTANCE_TYPE = "openstack_compute_instance_v2"


@dataclass(frozen=True)
class WrittenFile:
    path: str
    content: str
    owner: str
    permissions: str


def user_data_by_node(doc: dict[str, Any]) -> dict[str, str]:
    """Each instance's user_data, keyed by the VM name."""
    instances = doc.get("resource", {}).get(INSTANCE_TYPE, {})
    return {vm["name"]: vm["user_data"] for vm in instances.values()}


# A Terraform template sequence Terraform would still interpret: `${` or `%{` not escaped by
# doubling (`$${`, `%%{`).
_TEMPLATE = re.compile(r"(?<![$%])[$%]\{")


# How the construct refers to a Neutron-allocated node address inside user_data.
_PORT_ADDRESS = re.compile(r"\$\{element\(openstack_networking_port_v2\.([A-Za-z0-9_-]+)\.all_fixed_ips, 0\)\}")


def with_port_addresses(user_data: str, addresses: dict[str, str]) -> str:
    """user_data with each port-address reference replaced by that port's address (keyed by port resource name)."""

    def address(match: re.Match[str]) -> str:
        if match.group(1) not in addresses:
            raise ValueError(f"user_data refers to the address of port {match.group(1)}, which is not known")
        return addresses[match.group(1)]

    return _PORT_ADDRESS.sub(address, user_data)


def cloud_config(user_data: str) -> dict[str, Any]:
    """The cloud-config as the node receives it (Terraform's escapes undone), parsed.

    Raises ValueError where the text is not literal cloud-config: a Terraform reference left in it
    (Neutron-allocated addresses are only known to the state).
    """
    left = _TEMPLATE.search(user_data)
    if left:
        line = user_data[: left.start()].count("\n") + 1
        raise ValueError(f"user_data line {line} still holds a Terraform template sequence (read it from the state instead)")
    text = node_text(user_data)
    if not text.startswith("#cloud-config"):
        raise ValueError("user_data is not cloud-config")
    return yaml.safe_load(text)


def node_text(user_data: str) -> str:
    """user_data as the VM's metadata service hands it over: Terraform's `$${` and `%%{` undone."""
    return user_data.replace("$${", "${").replace("%%{", "%{")


def run_commands(user_data: str) -> list[list[str]]:
    """The cloud-config's runcmd entries given as argument lists (cloud-init runs those without a shell)."""
    return [list(map(str, entry)) for entry in cloud_config(user_data).get("runcmd", []) if isinstance(entry, list)]


def written_files(user_data: str) -> dict[str, WrittenFile]:
    """The cloud-config's write_files as the node receives them, keyed by path on the node.

    Raises ValueError as `cloud_config` does, and for an encoding cloud-init would decode.
    """
    files = {}
    for entry in cloud_config(user_data).get("write_files", []):
        content = entry.get("content", "")
        encoding = entry.get("encoding", "text/plain")
        if encoding in ("b64", "base64"):
            content = base64.b64decode(content).decode()
        elif encoding != "text/plain":
            raise ValueError(f"write_files {entry['path']}: encoding {encoding!r} is not supported")
        path = entry["path"]
        files[path] = WrittenFile(path, content, entry.get("owner", "root:root"), str(entry.get("permissions", "0644")))
    return files


# The `docker run` options a userdata line may use, by whether they take a value. Anything else is
# refused, not guessed: a flag taken for an option with a value swallows the image name, and the
# operator's tool must never recreate a container from a line it misread.
_VALUE_OPTIONS = frozenset(
    {"--restart", "--network", "--name", "--label", "-l", "--volume", "-v", "--mount", "--cap-add", "--cap-drop",
     "--env", "-e", "--env-file", "--ulimit", "--user", "-u", "--stop-signal", "--stop-timeout", "--log-driver",
     "--log-opt", "--entrypoint", "--pid", "--memory", "-m", "--cpus", "--sysctl", "--security-opt", "--tmpfs",
     "--hostname", "-h", "--workdir", "-w", "--publish", "-p", "--device", "--add-host", "--dns", "--health-cmd",
     "--health-interval", "--health-retries", "--health-timeout", "--health-start-period"}
)  # fmt: skip
_FLAG_OPTIONS = frozenset(
    {"--detach", "-d", "--rm", "--init", "--read-only", "--privileged", "--interactive", "-i", "--tty", "-t",
     "--publish-all", "-P", "--oom-kill-disable", "--no-healthcheck", "--sig-proxy"}
)  # fmt: skip


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
            raise ValueError(f"docker run line with {len(names)} --name options: {' '.join(self.argv)}")
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
    """Split `docker run [options] image [args]`; raises ValueError naming an option it does not know,
    and for a line without an image."""
    if list(argv[:2]) != ["docker", "run"]:
        raise ValueError(f"not a docker run command: {list(argv)}")
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
            raise ValueError(f"docker run option {option} has no value: {list(argv)}")
        elif option in _FLAG_OPTIONS:
            options.append((option, inline if eq else None))
        else:
            raise ValueError(f"docker run option {option} is not one this project reads (refused rather than guessed)")
        i += 1
    if i >= len(argv):
        raise ValueError(f"docker run without an image: {list(argv)}")
    return DockerRun(tuple(argv), tuple(options), argv[i], tuple(argv[i + 1 :]))


def docker_runs(user_data: str) -> dict[str, DockerRun]:
    """The runcmd's `docker run` entries, keyed by container name (each named, each name once)."""
    out: dict[str, DockerRun] = {}
    for entry in cloud_config(user_data).get("runcmd", []) or []:
        if isinstance(entry, list) and entry[:2] == ["docker", "run"]:
            run = parse_docker_run([str(a) for a in entry])
            if run.name is None:
                raise ValueError(f"runcmd runs a container without --name: {entry}")
            if run.name in out:
                raise ValueError(f"runcmd runs two containers named {run.name}")
            out[run.name] = run
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    stack_json, node, out = argv
    try:
        by_node = user_data_by_node(json.loads(Path(stack_json).read_text()))
    except (OSError, ValueError) as err:
        print(f"error: cannot read {stack_json}: {err}", file=sys.stderr)
        return 2
    if node not in by_node:
        print(f"error: node {node!r} is not in {stack_json}; nodes: {', '.join(sorted(by_node))}", file=sys.stderr)
        return 2
    try:
        files = written_files(by_node[node])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for f in files.values():
        target = Path(out) / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content)
        target.chmod(int(f.permissions, 8))
        print(f"{target}  (owner {f.owner}, mode {f.permissions} on the node)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
