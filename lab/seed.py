"""The seed design's keepalived settings, reproduced for comparison in the benchmark.

The seed ran VRRPv2 with one-second adverts, priorities 100/90/90 with the first node MASTER,
preemption on, and a check "is something listening on the frontend port" adding weight 11.
The lab keeps our VIP, interface, VRID and unicast peers (so only the settings under comparison
differ) and haproxy.cfg unchanged.
"""

from __future__ import annotations

import copy
from pathlib import PurePosixPath

import yaml

from lab import synth
from lab.configs import VrrpInstance, frontend_port, vrrp_instance
from userdata.extract import cloud_config, parse_docker_run

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
    out = copy.deepcopy(doc)
    instances = sorted(out["resource"][synth.INSTANCE].values(), key=lambda i: i.get("name", ""))
    port = None
    for i, inst in enumerate(instances):
        config = cloud_config(inst["user_data"])
        files = {f["path"]: f for f in config["write_files"]}
        if keepalived_conf_path not in files:
            raise synth.SynthError(f"{inst.get('name')}: user_data writes no {keepalived_conf_path}")
        ours = vrrp_instance(files[keepalived_conf_path]["content"])
        cfg = next(f["content"] for p, f in files.items() if p.endswith("/haproxy.cfg"))
        port = frontend_port(cfg)
        files[keepalived_conf_path]["content"] = keepalived_conf(ours, first=i == 0)
        host_script = str(PurePosixPath(keepalived_conf_path).parent / PurePosixPath(CHECK_SCRIPT).name)
        config["write_files"].append({"path": host_script, "owner": "root:root", "permissions": "0755",
                                      "content": check_script(port)})  # fmt: skip
        for entry in config["runcmd"]:
            if isinstance(entry, list) and entry[:2] == ["docker", "run"] and parse_docker_run(entry).name == keepalived_container:
                image = parse_docker_run(entry).image
                at = entry.index(image)
                entry[at:at] = ["--volume", f"{host_script}:{CHECK_SCRIPT}:ro"]
        text = "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, width=1000)
        inst["user_data"] = text.replace("${", "$${").replace("%{", "%%{")
    return out
