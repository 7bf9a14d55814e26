"""Where each user_data file lives inside its container: the one place the lab learns it.

The lab reads the files the containers read (ports, VRRP settings) and names the containers as
the userdata does. The mapping belongs to the project (`userdata.render`), not to the lab;
importing it keeps the two from drifting apart.
"""

from __future__ import annotations

from userdata.render import (
    CONTAINER_FILES,
    HAPROXY_CFG,
    HAPROXY_CONTAINER,
    KEEPALIVED_CONF,
    KEEPALIVED_CONTAINER,
    NETWORK_SCRIPT,
)

#: host path (as written by cloud-init) -> path the container reads
CONTAINER_PATHS: dict[str, str] = {f.host_path: f.container_path for f in CONTAINER_FILES}
HAPROXY_CONFIG: str = HAPROXY_CFG.container_path
KEEPALIVED_CONFIG: str = KEEPALIVED_CONF.container_path
NETWORK_CHECK: str = NETWORK_SCRIPT.container_path
KEEPALIVED_HOST_PATH: str = KEEPALIVED_CONF.host_path
HAPROXY_HOST_PATH: str = HAPROXY_CFG.host_path
__all__ = [
    "CONTAINER_PATHS",
    "HAPROXY_CONFIG",
    "KEEPALIVED_CONFIG",
    "KEEPALIVED_HOST_PATH",
    "HAPROXY_HOST_PATH",
    "NETWORK_CHECK",
    "HAPROXY_CONTAINER",
    "KEEPALIVED_CONTAINER",
]
