"""Render each node's haproxy.cfg, keepalived.conf, check script and cloud-config. Text in, text out: no I/O.

Decisions come from `cluster.plan`; templates only format. Addresses are passed as text so that a
node whose address Neutron allocates can carry a Terraform reference instead of a literal.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class ContainerFile:
    """A file cloud-init writes on the node and the path where its container reads it."""

    key: str
    host_path: str
    container_path: str
    owner: str
    permissions: str


HAPROXY_CFG = ContainerFile(
    "haproxy.cfg", "/etc/kubeadm-ha/haproxy/haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg", "root:root", "0644"
)
# osixia/keepalived 2.0.20 reads this path; --copy-service copies it before the image edits it.
KEEPALIVED_CONF = ContainerFile(
    "keepalived.conf",
    "/etc/kubeadm-ha/keepalived/keepalived.conf",
    "/container/service/keepalived/assets/keepalived.conf",
    "root:root",
    "0600",
)
# Script security: root-owned, not writable by others, in root-owned directories.
CHECK_SCRIPT = ContainerFile(
    "check_haproxy.sh",
    "/etc/kubeadm-ha/keepalived/check_haproxy.sh",
    "/etc/keepalived/check_haproxy.sh",
    "root:root",
    "0755",
)
CONTAINER_FILES = (HAPROXY_CFG, KEEPALIVED_CONF, CHECK_SCRIPT)
HAPROXY_CONTAINER = "haproxy"
KEEPALIVED_CONTAINER = "keepalived"


@dataclass(frozen=True)
class _Check:
    interval: int = p.CHECK_INTERVAL_S
    timeout: int = p.CHECK_TIMEOUT_S
    weight: int = p.CHECK_WEIGHT
    probes: int = p.CHECK_PROBES
    probe_spacing: str = p.CHECK_PROBE_SPACING
    probe_timeout: str = p.CHECK_PROBE_TIMEOUT


def _literal_addresses(plan: p.Plan) -> dict[str, str]:
    missing = [n.name for n in plan.nodes if n.address is None]
    if missing:
        raise ValueError(f"addresses of {', '.join(missing)} are allocated by Neutron: pass them explicitly")
    return {n.name: n.address for n in plan.nodes if n.address is not None}


def render_haproxy_cfg(plan: p.Plan, addresses: Mapping[str, str] | None = None) -> str:
    addresses = addresses or _literal_addresses(plan)
    servers = [{"name": n.name, "address": addresses[n.name]} for n in plan.nodes]
    return _ENV.get_template("haproxy.cfg.j2").render(
        plan=plan, servers=servers, health_uri=p.HEALTH_URI, maxconn=p.HAPROXY_MAXCONN
    )


def render_keepalived_conf(plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None) -> str:
    addresses = addresses or _literal_addresses(plan)
    node = plan.node(node_name)
    peers = [addresses[n.name] for n in plan.nodes if n.name != node_name]
    return _ENV.get_template("keepalived.conf.j2").render(
        plan=plan,
        node=node,
        node_address=addresses[node_name],
        peers=peers,
        vrrp_version=p.VRRP_VERSION,
        advert_interval=p.ADVERT_INTERVAL,
        check=_Check(),
        check_script_path=CHECK_SCRIPT.container_path,
    )


def render_check_script(plan: p.Plan) -> str:
    return _ENV.get_template("check_haproxy.sh.j2").render(plan=plan, check=_Check(), health_uri=p.HEALTH_URI)


def render_node_files(plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None) -> dict[str, str]:
    """The files of one node, keyed by ContainerFile.key."""
    return {
        HAPROXY_CFG.key: render_haproxy_cfg(plan, addresses),
        KEEPALIVED_CONF.key: render_keepalived_conf(plan, node_name, addresses),
        CHECK_SCRIPT.key: render_check_script(plan),
    }


def container_commands(plan: p.Plan) -> list[list[str]]:
    """`docker run` for both daemons: host network, restart after crash and reboot, configs read-only."""

    def mount(f: ContainerFile) -> list[str]:
        return ["--volume", f"{f.host_path}:{f.container_path}:ro"]

    common = ["docker", "run", "--detach", "--restart", "always", "--network", "host"]
    # The image runs haproxy as non-root: the hard open-files limit must hold 2 x maxconn.
    nofile = ["--ulimit", f"nofile={p.HAPROXY_NOFILE}:{p.HAPROXY_NOFILE}"]
    haproxy = [*common, "--name", HAPROXY_CONTAINER, *nofile, *mount(HAPROXY_CFG), plan.haproxy_image]
    keepalived = [
        *common,
        "--name",
        KEEPALIVED_CONTAINER,
        # NET_RAW and NET_BROADCAST too: with NET_ADMIN alone unicast adverts fail.
        "--cap-add", "NET_ADMIN",
        "--cap-add", "NET_BROADCAST",
        "--cap-add", "NET_RAW",
        # The image's start-up removes these addresses if a killed keepalived left them behind.
        "--env", f"KEEPALIVED_VIRTUAL_IPS=#PYTHON2BASH:['{plan.vip}']",
        *mount(KEEPALIVED_CONF),
        *mount(CHECK_SCRIPT),
        plan.keepalived_image,
        "--copy-service",
    ]
    return [haproxy, keepalived]


def render_cloud_config(plan: p.Plan, node_name: str, addresses: Mapping[str, str] | None = None) -> str:
    contents = render_node_files(plan, node_name, addresses)
    files = [
        {"host_path": f.host_path, "owner": f.owner, "permissions": f.permissions, "content": contents[f.key]}
        for f in CONTAINER_FILES
    ]
    return _ENV.get_template("cloud-config.yaml.j2").render(
        plan=plan, node=plan.node(node_name), files=files, commands=container_commands(plan)
    )
