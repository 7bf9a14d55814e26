"""The seed design's keepalived settings, reproduced for comparison in the benchmark.

The seed ran VRRPv2 with one-second adverts, priorities 100/90/90 with the first node MASTER,
preemption on, and a check "is something listening on the frontend port" adding weight 11.
The lab keeps our VIP, interface, VRID and unicast peers (so only the settings under comparison
differ) and haproxy.cfg unchanged.
"""

from __future__ import annotations

from lab.configs import VrrpInstance

CHECK_SCRIPT = "/etc/keepalived/seed_check.sh"


def check_script(frontend_port: int) -> str:
    # The seed's `netstat -nlp | grep 9443`, with ss (netstat is not installed).
    return f"#!/bin/sh\nss -ltn | grep -q ':{frontend_port} '\n"


def keepalived_conf(inst: VrrpInstance, first: bool) -> str:
    peers = "".join(f"        {p}\n" for p in inst.peers)
    vips = "".join(f"        {v}\n" for v in inst.vips)
    src = f"    unicast_src_ip {inst.src_ip}\n" if inst.src_ip else ""
    return (
        "global_defs {\n"
        "    vrrp_version 2\n"
        "    enable_script_security\n"
        "    script_user nobody\n"
        "}\n"
        "vrrp_script chk_frontend {\n"
        f'    script "{CHECK_SCRIPT}"\n'
        "    interval 1\n"
        "    weight 11\n"
        "}\n"
        f"vrrp_instance {inst.name} {{\n"
        f"    state {'MASTER' if first else 'BACKUP'}\n"
        f"    interface {inst.interface}\n"
        f"    virtual_router_id {inst.router_id}\n"
        f"    priority {100 if first else 90}\n"
        "    advert_int 1\n"
        f"{src}"
        f"    unicast_peer {{\n{peers}    }}\n"
        f"    virtual_ipaddress {{\n{vips}    }}\n"
        "    track_script {\n"
        "        chk_frontend\n"
        "    }\n"
        "}\n"
    )
