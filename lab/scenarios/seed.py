"""The seed design's keepalived settings, reproduced for comparison in the benchmark.

The seed ran VRRPv2 with one-second adverts, priorities 100/90/90 with the first node MASTER,
preemption on, and a check "is something listening on the frontend port" adding weight 11.
The lab keeps our VIP, interface, VRID and unicast peers (so only the settings under comparison
differ) and haproxy.cfg unchanged.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from lab.world.synth import SynthError
from userdata import cloudconfig
from userdata.configs import VrrpInstance, frontend_port, vrrp_instance
from userdata.stack import Instance, SynthesizedStack, with_user_data

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


def seed_doc(doc: dict, keepalived_conf_path: str, keepalived_container: str) -> dict:
    """A copy of the JSON whose nodes run the seed's keepalived settings and check.

    Each node's cloud-config gets the seed's keepalived.conf in place of ours (same VIP,
    interface, VRID and peers), writes the seed's check script next to it, and mounts that script
    into the keepalived container where the conf names it. Everything else stays as synthesized."""
    first = SynthesizedStack(doc).instances[0].name

    def seeded(inst: Instance) -> str:
        try:
            config = cloudconfig.load(inst.user_data)
            files = {f["path"]: f for f in config["write_files"]}
            if keepalived_conf_path not in files:
                raise SynthError(f"{inst.name}: user_data writes no {keepalived_conf_path}")
            ours = vrrp_instance(files[keepalived_conf_path]["content"])
            cfg = next(f["content"] for p, f in files.items() if p.endswith("/haproxy.cfg"))
            files[keepalived_conf_path]["content"] = keepalived_conf(ours, first=inst.name == first)
            host_script = str(PurePosixPath(keepalived_conf_path).parent / PurePosixPath(CHECK_SCRIPT).name)
            script = check_script(frontend_port(cfg))
            config["write_files"].append(
                {"path": host_script, "owner": "root:root", "permissions": "0755", "content": script}
            )
            entry = cloudconfig.runcmd_docker_run(config, keepalived_container)
            at = entry.index(cloudconfig.parse_docker_run(entry).image)
            entry[at:at] = ["--volume", f"{host_script}:{CHECK_SCRIPT}:ro"]
        except cloudconfig.CloudConfigError as err:
            raise SynthError(f"{inst.where}: {err}") from None
        return cloudconfig.dump(config)

    return with_user_data(doc, seeded)
