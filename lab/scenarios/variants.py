"""The variants of the synthesized JSON that the scenarios run: the seed's keepalived settings
beside ours, the negative controls' edits, and a changed file line (the operator's rolls).

Each returns an edited copy; the original stays untouched. A variant that finds nothing to edit
is an error (SynthError), so a control can never pass by changing nothing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

from lab.scenarios import seed
from lab.world.harness import Lab
from lab.world.synth import SynthError, edited_user_data, parse, replace_pair, with_docker_run
from userdata import cloudconfig, configs
from userdata.render import KEEPALIVED_CONF, KEEPALIVED_CONTAINER
from userdata.stack import PORT, RULE, VRRP, protocol

# What the nodes run: our keepalived.conf, or the seed's settings (`lab.scenarios.seed`).
VARIANTS: dict[str, Callable[[dict], dict] | None] = {
    "ours": None,
    "seed": lambda doc: seed.seed_doc(doc, KEEPALIVED_CONF.host_path, KEEPALIVED_CONTAINER),
}


def lab_for(doc: dict, variant: str = "ours", **kwargs) -> Lab:
    """`Lab(doc)` whose nodes run `variant` (the JSON as synthesized for "ours")."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: expected one of {tuple(VARIANTS)}")
    return Lab(doc, variant, edit=VARIANTS[variant], **kwargs)


def without_vrrp_rules(doc: dict) -> dict:
    """Negative control: the same JSON with every VRRP (IP protocol 112) rule removed."""
    out = copy.deepcopy(doc)
    rules = out["resource"].get(RULE, {})
    removed = [n for n, r in rules.items() if protocol(r.get("protocol")) == VRRP]
    if not removed:
        raise SynthError("the JSON has no VRRP rule to remove")
    for name in removed:
        del rules[name]
    return out


def without_vip_pairs(doc: dict) -> dict:
    """Negative control: the same JSON with the VIP removed from every port's allowed_address_pairs."""
    out = copy.deepcopy(doc)
    vip = parse(doc).vip
    changed = 0
    for port in out["resource"][PORT].values():
        pairs = port.get("allowed_address_pairs", [])
        kept = [p for p in pairs if p["ip_address"] not in (vip, f"{vip}/32")]
        changed += len(pairs) - len(kept)
        port["allowed_address_pairs"] = kept
    if not changed:
        raise SynthError(f"no port lists the VIP {vip} as an allowed address pair")
    return out


def with_file_line(doc: dict, path: str, old: str, new: str) -> dict:
    """A copy of the JSON in which one line of the file `path` reads `new` instead of `old`, on every
    node: a change as an edited template would make it (see cloudconfig.with_file_line)."""
    return edited_user_data(doc, lambda user_data: cloudconfig.with_file_line(user_data, path, old, new))


def with_check_uri(doc: dict, haproxy_cfg: str, uri: str) -> dict:
    """A copy of the JSON whose haproxy checks each apiserver's `uri` instead (the `http-check send`
    line of the file `haproxy_cfg`), on every node."""
    line, current = configs.check_send(parse(doc).nodes[0].file(haproxy_cfg).content)
    if current == uri:
        raise SynthError(f"haproxy already checks {uri}: {line!r}")
    return with_file_line(
        doc, haproxy_cfg, line, re.sub(rf"(\buri\s+){re.escape(current)}(?=\s|$)", rf"\g<1>{uri}", line)
    )


def with_haproxy_network_none(doc: dict, container: str = "haproxy") -> dict:
    """Negative control: haproxy runs with `--network none` instead of `--network host`."""
    return with_docker_run(doc, container, lambda a: replace_pair(a, "--network", "host", "none"), "--network none")


def without_net_admin(doc: dict, container: str = "keepalived") -> dict:
    """Negative control: keepalived runs without `--cap-add NET_ADMIN`."""
    return with_docker_run(doc, container, lambda a: replace_pair(a, "--cap-add", "NET_ADMIN", None), "no NET_ADMIN")
