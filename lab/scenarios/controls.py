"""The negative controls: each builds its own lab from an edited copy of the JSON
(`lab.scenarios.variants`) and must show the failure the edit causes, so that the drills' passes
mean something.
"""

from __future__ import annotations

import time

from lab.scenarios import variants
from lab.scenarios.drills import DrillResult, drain, drill_result
from lab.world import apiserver
from lab.world.node import LabNode
from userdata.render import HAPROXY_CFG, HAPROXY_CONTAINER, KEEPALIVED_CONTAINER

OBSERVE = 3.0
# keepalived lines a control reports as its evidence
CHECK_FAILED = r"VRRP_Script\(\S+\) failed"
CONTROL_EVIDENCE = rf"Entering (MASTER|FAULT) STATE|[Pp]ermitted|[Ee]rror|{CHECK_FAILED}"


def _control(doc: dict, variant: str, name: str, note: str) -> DrillResult:
    """Build a lab from an edited JSON and watch it: it must not reach the steady state."""
    with variants.lab_for(doc, variant) as lab:
        # No steady state to wait for: wait until every keepalived has decided, then watch.
        # (keepalived logs no state when a failing check holds an instance in FAULT from the start)
        def decided(n: LabNode) -> bool:
            return n.daemons.vrrp_state not in ("INIT", "STOPPED") or bool(
                n.daemons.events_between("keepalived", CHECK_FAILED, 0, float("inf"))
            )

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(decided(n) for n in lab.nodes.values()):
            time.sleep(0.1)
        time.sleep(3.5 if variant == "seed" else 1.0)  # seed: three 1 s adverts before a backup takes over
        t0 = time.monotonic()
        time.sleep(OBSERVE)
        result = drill_result(lab, name, t0, time.monotonic(), None)
        result.notes.append(note)
        for n in lab.nodes.values():
            for e in n.daemons.events_between("keepalived", CONTROL_EVIDENCE, 0, float("inf"))[:3]:
                result.notes.append(f"{n.name} keepalived: {e.text}")
        return result


def without_vrrp_rule(doc: dict, variant: str = "ours") -> DrillResult:
    """Negative control: no VRRP rule in the security group; expect more than one VIP holder."""
    return _control(variants.without_vrrp_rules(doc), variant, "no-vrrp-rule", "VRRP rule removed from the JSON")


def haproxy_network_none(doc: dict, variant: str = "ours") -> DrillResult:
    """Negative control: haproxy's line says `--network none`; expect no VIP holder at all."""
    return _control(
        variants.with_haproxy_network_none(doc, HAPROXY_CONTAINER),
        variant,
        "haproxy-network-none",
        "haproxy runs with --network none: it listens in an empty namespace of its own, so keepalived's "
        "check (on the node's 127.0.0.1) fails on every node and every keepalived stays in FAULT",
    )


def keepalived_without_net_admin(doc: dict, variant: str = "ours") -> DrillResult:
    """Negative control: keepalived's line lacks `--cap-add NET_ADMIN`; expect no VIP holder."""
    return _control(
        variants.without_net_admin(doc, KEEPALIVED_CONTAINER),
        variant,
        "keepalived-no-net-admin",
        "keepalived runs without NET_ADMIN: it may decide to be MASTER but cannot add the VIP",
    )


def without_vip_pair(doc: dict, variant: str = "ours") -> DrillResult:
    """Negative control: VIP not an allowed address pair; expect the client not to reach it."""
    return _control(variants.without_vip_pairs(doc), variant, "no-vip-pair", "VIP removed from allowed_address_pairs")


def apiserver_drain_healthz(doc: dict, variant: str = "ours") -> DrillResult:
    """Negative control: the drain with haproxy checking /healthz (kubeadm's recipe), which a
    draining apiserver passes until it stops: haproxy sees it DOWN only once it has stopped accepting."""
    edited = variants.with_check_uri(doc, HAPROXY_CFG.host_path, apiserver.HEALTH_PATH)
    with variants.lab_for(edited, variant) as lab:
        lab.wait_steady()
        result = drain(lab, "apiserver-drain-healthz")
        result.notes.append(f"haproxy checks {apiserver.HEALTH_PATH} (edited in the lab's copy of the JSON)")
        return result
