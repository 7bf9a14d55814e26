"""Render each node's haproxy.cfg, keepalived.conf, check script and cloud-config. Text in, text out: no I/O.

Decisions come from `cluster.plan`; templates only format. Addresses are passed as text so that a
node whose address Neutron allocates can carry a Terraform reference instead of a literal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2

from cluster import plan as p

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
# One command per line as a YAML flow list that a reviewer reads as typed (no HTML escaping).
_ENV.filters["flow"] = lambda items: json.dumps(list(items))
# Every timing and limit, as `tunables.NAME`: cluster.plan decides them, typed, and the templates
# format them; seconds with `| seconds`.
_ENV.globals["tunables"] = p.TUNABLES


def seconds(value: float) -> str:
    """A duration in seconds as keepalived, curl, ping and sleep take it: 0.1, 0.8, 1 (no trailing
    zeros, no exponent)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e6:
        raise ValueError(f"not a duration in seconds: {value!r}")
    return f"{value:g}"


_ENV.filters["seconds"] = seconds


@dataclass(frozen=True)
class ConfigDir:
    """A host folder cloud-init writes and where its container mounts it, read-only.

    Whole folders, not single files: a single-file bind mount pins the file's inode, so a file
    replaced by rename (an editor, or the roll's atomic write) would stay invisible to the container.
    """

    host: str
    container: str


HAPROXY_DIR = ConfigDir("/etc/kubeadm-ha/haproxy", "/usr/local/etc/haproxy")
# osixia/keepalived 2.0.20 runs `keepalived -f /usr/local/etc/keepalived/keepalived.conf`. Only when
# that file is missing does its start-up link it to assets/keepalived.conf in the copy of the service
# folder that `--copy-service` makes at the container's first start, a copy a reload (HUP) or a
# restart never refreshes. Mounted here, keepalived reads the live file at start and on every HUP.
KEEPALIVED_DIR = ConfigDir("/etc/kubeadm-ha/keepalived", "/usr/local/etc/keepalived")
# keepalived's notify script keeps the VRRP state here (read-write for keepalived, read-only for
# haproxy's metrics). /run is a tmpfs, so no stale state survives a reboot; Docker creates the
# folder (root, 0755) when it is missing. Only root writes it: the notify script runs as root.
STATE_DIR = "/run/kubeadm-ha"
STATE_FILE = f"{STATE_DIR}/keepalived.state"


@dataclass(frozen=True)
class ContainerFile:
    """A file cloud-init writes on the node, in a folder its container mounts."""

    key: str
    folder: ConfigDir
    owner: str
    permissions: str

    @property
    def host_path(self) -> str:
        return f"{self.folder.host}/{self.key}"

    @property
    def container_path(self) -> str:
        return f"{self.folder.container}/{self.key}"


HAPROXY_CFG = ContainerFile("haproxy.cfg", HAPROXY_DIR, "root:root", "0644")
# A Lua service in haproxy serves keepalived's state and "holds the VIP" as Prometheus metrics.
KEEPALIVED_METRICS = ContainerFile("keepalived_metrics.lua", HAPROXY_DIR, "root:root", "0644")
KEEPALIVED_CONF = ContainerFile("keepalived.conf", KEEPALIVED_DIR, "root:root", "0600")
# Script security: root-owned, not writable by others, in root-owned directories.
CHECK_SCRIPT = ContainerFile("check_haproxy.sh", KEEPALIVED_DIR, "root:root", "0755")
NETWORK_SCRIPT = ContainerFile("check_network.sh", KEEPALIVED_DIR, "root:root", "0755")
NOTIFY_SCRIPT = ContainerFile("notify_state.sh", KEEPALIVED_DIR, "root:root", "0755")
CONTAINER_FILES = (HAPROXY_CFG, KEEPALIVED_METRICS, KEEPALIVED_CONF, CHECK_SCRIPT, NETWORK_SCRIPT, NOTIFY_SCRIPT)
# The first-boot steps around the `docker run` lines (Docker, the pulls, the check that both run),
# retried for a bounded time; a node writes cluster.plan's BOOT_FAILED_MARK where they fail. Beside
# the containers' folders, root's alone (the lab's nodes have no writable /usr/local either).
BOOT_SCRIPT = "/etc/kubeadm-ha/boot.sh"

# Each `docker run` line carries a hash of itself (without the label) as a label, so the operator's
# tool can tell a container created from the current line from one that must be recreated.
RUN_LABEL = "io.kubeadm-ha.run"
HAPROXY_CONTAINER = "haproxy"
KEEPALIVED_CONTAINER = "keepalived"
CONTAINERS = (HAPROXY_CONTAINER, KEEPALIVED_CONTAINER)


def _literal_addresses(plan: p.Plan) -> dict[str, str]:
    missing = [n.name for n in plan.nodes if n.address is None]
    if missing:
        raise ValueError(f"addresses of {', '.join(missing)} are allocated by Neutron: pass them explicitly")
    return {n.name: n.address for n in plan.nodes if n.address is not None}


def render_haproxy_cfg(plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None) -> str:
    addresses = addresses or _literal_addresses(plan)
    servers = [{"name": n.name, "address": addresses[n.name]} for n in plan.nodes]
    return _ENV.get_template("haproxy.cfg.j2").render(
        plan=plan,
        servers=servers,
        node_address=addresses[node_name],
        check_request_line=f"GET {p.HEALTH_URI} ",  # as curl sends it: the check script's request
        lua_path=KEEPALIVED_METRICS.container_path,
    )


def render_keepalived_metrics(plan: p.Plan) -> str:
    return _ENV.get_template("keepalived_metrics.lua.j2").render(plan=plan, state_file=STATE_FILE)


def render_notify_script() -> str:
    return _ENV.get_template("notify_state.sh.j2").render(state_dir=STATE_DIR, state_file=STATE_FILE)


def render_keepalived_conf(plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None) -> str:
    addresses = addresses or _literal_addresses(plan)
    node = plan.node(node_name)
    peers = [addresses[n.name] for n in plan.nodes if n.name != node_name]
    return _ENV.get_template("keepalived.conf.j2").render(
        plan=plan,
        node=node,
        node_address=addresses[node_name],
        peers=peers,
        check_script_path=CHECK_SCRIPT.container_path,
        reach_script_path=NETWORK_SCRIPT.container_path,
        # The gateway first: the script treats all alike, the lab finds the gateway there.
        reach_targets=[plan.gateway, *peers],
        notify_script_path=NOTIFY_SCRIPT.container_path,
    )


def render_check_script(plan: p.Plan) -> str:
    return _ENV.get_template("check_haproxy.sh.j2").render(plan=plan)


def render_network_script() -> str:
    return _ENV.get_template("check_network.sh.j2").render()


def render_node_files(plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None) -> dict[str, str]:
    """The files of one node, keyed by ContainerFile.key."""
    return {
        HAPROXY_CFG.key: render_haproxy_cfg(plan, node_name, addresses),
        KEEPALIVED_METRICS.key: render_keepalived_metrics(plan),
        KEEPALIVED_CONF.key: render_keepalived_conf(plan, node_name, addresses),
        CHECK_SCRIPT.key: render_check_script(plan),
        NETWORK_SCRIPT.key: render_network_script(),
        NOTIFY_SCRIPT.key: render_notify_script(),
    }


def container_commands(plan: p.Plan) -> list[list[str]]:
    """`docker run` for both daemons: host network, restart after crash and reboot, configs read-only."""

    def mount(d: ConfigDir) -> list[str]:
        return ["--volume", f"{d.host}:{d.container}:ro"]

    common = ["docker", "run", "--detach", "--restart", "always", "--network", "host", *log_options()]
    # The image runs haproxy as non-root: the hard open-files limit must hold 2 x maxconn.
    nofile = ["--ulimit", f"nofile={p.HAPROXY_NOFILE}:{p.HAPROXY_NOFILE}"]
    haproxy = [
        *common,
        "--name",
        HAPROXY_CONTAINER,
        *nofile,
        *mount(HAPROXY_DIR),
        "--volume",
        f"{STATE_DIR}:{STATE_DIR}:ro",
        plan.haproxy_image,
    ]
    keepalived = [
        *common,
        "--name",
        KEEPALIVED_CONTAINER,
        # NET_RAW and NET_BROADCAST too: with NET_ADMIN alone unicast adverts fail.
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_BROADCAST",
        "--cap-add",
        "NET_RAW",
        # The image's start-up removes these addresses if a killed keepalived left them behind.
        "--env",
        f"KEEPALIVED_VIRTUAL_IPS=#PYTHON2BASH:['{plan.vip}']",
        *mount(KEEPALIVED_DIR),
        "--volume",
        f"{STATE_DIR}:{STATE_DIR}",
        plan.keepalived_image,
        "--copy-service",
    ]
    return [_labelled(haproxy), _labelled(keepalived)]


def log_options() -> list[str]:
    """Docker's json-file driver, rotated: Docker's default keeps every line on the node's disk."""
    return [
        "--log-driver",
        "json-file",
        "--log-opt",
        f"max-size={p.CONTAINER_LOG_MAX_MB}m",
        "--log-opt",
        f"max-file={p.CONTAINER_LOG_FILES}",
    ]


def _labelled(command: list[str]) -> list[str]:
    digest = hashlib.sha256(json.dumps(command).encode()).hexdigest()[:16]
    at = command.index("--name") + 2
    return [*command[:at], "--label", f"{RUN_LABEL}={digest}", *command[at:]]


# What a joining node's join.sh accepts for each join secret (kubeadm's own forms), and an example.
JOIN_SECRET_PATTERNS = {
    "token": r"[a-z0-9]{6}\.[a-z0-9]{16}",
    "caCertHash": r"sha256:[0-9a-f]{64}",
    "certificateKey": r"[0-9a-f]{64}",
}
JOIN_SECRET_EXAMPLES = {
    "token": "<6>.<16> lowercase letters and digits",
    "caCertHash": "sha256:<64 hex>",
    "certificateKey": "<64 hex>",
}


def cert_sans(plan: p.Plan, addresses: Mapping[str, str], floating_ip: str | None) -> list[str]:
    """Every address a client may reach an apiserver by: the VIP, the floating IP, each node."""
    return [plan.vip, *([floating_ip] if floating_ip else []), *(addresses[n.name] for n in plan.nodes)]


def render_kubeadm_config(
    plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None, floating_ip: str | None = None
) -> str:
    """The node's kubeadm configuration (v1beta4): Init- and ClusterConfiguration on the first node,
    a JoinConfiguration with the join secrets left as placeholders on the others."""
    addresses = addresses or _literal_addresses(plan)
    return _ENV.get_template("kubeadm.yaml.j2").render(
        plan=plan,
        k=plan.kubernetes,
        node=plan.node(node_name),
        node_address=addresses[node_name],
        init=node_name == plan.init_node.name,
        path=p.KUBEADM_CONFIG,
        join_script=p.KUBEADM_JOIN,
        cert_sans=cert_sans(plan, addresses, floating_ip),
        apiserver_dir=p.APISERVER_DIR,
        secrets={field: placeholder for field, (placeholder, _) in p.JOIN_SECRETS.items()},
    )


def render_join_script() -> str:
    return _ENV.get_template("kubeadm-join.sh.j2").render(
        config=p.KUBEADM_CONFIG, secrets=p.JOIN_SECRETS, patterns=JOIN_SECRET_PATTERNS, examples=JOIN_SECRET_EXAMPLES
    )


def render_authentication_config(plan: p.Plan) -> str:
    return _ENV.get_template("authentication-config.yaml.j2").render(plan=plan, paths=p.ANONYMOUS_PATHS)


def kubeadm_files(
    plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None, floating_ip: str | None = None
) -> list[dict[str, str]]:
    """The kubeadm files cloud-init writes on the node (no container reads them)."""
    files = [
        _file(p.KUBEADM_CONFIG, "0600", render_kubeadm_config(plan, node_name, addresses, floating_ip)),
    ]
    if node_name != plan.init_node.name:
        files.append(_file(p.KUBEADM_JOIN, "0700", render_join_script()))
    if plan.kubernetes.health_only_anonymous:
        files.append(_file(p.AUTHENTICATION_CONFIG, "0600", render_authentication_config(plan)))
    return files


def _file(path: str, permissions: str, content: str) -> dict[str, str]:
    return {"host_path": path, "owner": "root:root", "permissions": permissions, "content": content}


def render_cloud_config(
    plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None, floating_ip: str | None = None
) -> str:
    contents = render_node_files(plan, node_name, addresses)
    files = [
        {"host_path": f.host_path, "owner": f.owner, "permissions": f.permissions, "content": contents[f.key]}
        for f in CONTAINER_FILES
    ]
    files += kubeadm_files(plan, node_name, addresses, floating_ip)
    files.append(
        {"host_path": BOOT_SCRIPT, "owner": "root:root", "permissions": "0755", "content": render_boot_script()}
    )
    return _ENV.get_template("cloud-config.yaml.j2").render(
        plan=plan,
        node=plan.node(node_name),
        files=files,
        boot_commands=boot_commands(plan),
        commands=container_commands(plan),
        boot_steps={
            "install": [BOOT_SCRIPT, "install"],
            "pull": [BOOT_SCRIPT, "pull", plan.haproxy_image, plan.keepalived_image],
            "verify": [BOOT_SCRIPT, "verify", *CONTAINERS],
        },
    )


def render_boot_script() -> str:
    return _ENV.get_template("boot.sh.j2").render()


def boot_commands(plan: p.Plan) -> list[list[str]]:
    """cloud-init's bootcmd, run at every boot: the kernel settings the failover timings rely on."""
    return [["sysctl", "-w", f"net.ipv4.neigh.{plan.interface}.retrans_time_ms={p.NEIGH_RETRANS_MS}"]]
