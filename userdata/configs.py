"""The reader of keepalived.conf and haproxy.cfg, beside their renderer (`userdata.render`).

keepalived's block syntax parsed into stanzas, and the few facts of haproxy.cfg anyone reads back:
the tests check what the renderer wrote with it, and the lab takes the interface name, VRRP instance
and ports from the files the nodes really get, so that a lab built from a config with other values
still lines up with it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field


@dataclass
class Stanza:
    """`keyword arg... [{ children }]` in keepalived's block syntax."""

    keyword: str
    args: list[str]
    children: list[Stanza] | None = None

    def find(self, keyword: str) -> list[Stanza]:
        return [c for c in self.children or [] if c.keyword == keyword]

    def one(self, keyword: str) -> Stanza:
        found = self.find(keyword)
        if len(found) != 1:
            raise ValueError(
                f"keepalived.conf: expected one {keyword!r} in {self.keyword} {' '.join(self.args)}, found {len(found)}"
            )
        return found[0]

    def value(self, keyword: str) -> str:
        return self.one(keyword).args[0]


def parse_keepalived(text: str) -> Stanza:
    """Parse keepalived.conf into a tree of stanzas (comments `#` and `!` dropped)."""
    root = Stanza("<root>", [], [])
    stack = [root]
    for raw in text.splitlines():
        lexer = shlex.shlex(raw.replace("{", " { ").replace("}", " } "), posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#!"
        words = list(lexer)
        while words:
            if words[0] == "}":
                stack.pop()
                words = words[1:]
                continue
            cut = words.index("{") if "{" in words else len(words)
            stanza = Stanza(words[0], words[1:cut])
            parent = stack[-1]
            assert parent.children is not None  # only blocks are stacked
            parent.children.append(stanza)
            if cut < len(words):
                stanza.children = []
                stack.append(stanza)
                words = words[cut + 1 :]
            else:
                words = []
    if len(stack) != 1:
        raise ValueError("keepalived.conf: unbalanced braces")
    return root


@dataclass(frozen=True)
class VrrpInstance:
    """The one VRRP instance a node runs, as far as its readers need it."""

    name: str
    interface: str
    router_id: int
    priority: int
    advert_int: float
    src_ip: str | None
    peers: tuple[str, ...]
    vips: tuple[str, ...] = field(default=())


def vrrp_instance(text: str) -> VrrpInstance:
    """The single vrrp_instance of a keepalived.conf (the renderer writes exactly one)."""
    root = parse_keepalived(text)
    found = root.find("vrrp_instance")
    if len(found) != 1:
        raise ValueError(f"keepalived.conf: expected one vrrp_instance, found {len(found)}")
    inst = found[0]
    src = inst.find("unicast_src_ip")
    peers = inst.find("unicast_peer")
    return VrrpInstance(
        name=inst.args[0],
        interface=inst.value("interface"),
        router_id=int(inst.value("virtual_router_id")),
        priority=int(inst.value("priority")),
        advert_int=float(inst.value("advert_int")) if inst.find("advert_int") else 1.0,
        src_ip=src[0].args[0] if src else None,
        peers=tuple(p.keyword for p in peers[0].children or []) if peers else (),
        vips=tuple(v.keyword for v in inst.one("virtual_ipaddress").children or []),
    )


def script_arguments(text: str, script: str) -> tuple[str, ...] | None:
    """The arguments keepalived passes to `script` in a vrrp_script of keepalived.conf, or None."""
    for stanza in parse_keepalived(text).find("vrrp_script"):
        words = shlex.split(stanza.value("script"))
        if words and words[0] == script:
            return tuple(words[1:])
    return None


_BIND = re.compile(r"^\s*bind\s+(\S*):(\d+)", re.MULTILINE)


def frontend_port(haproxy_cfg: str) -> int:
    """The port of the one frontend bound on all addresses (the VIP endpoint)."""
    ports = {int(port) for addr, port in _BIND.findall(haproxy_cfg) if addr in ("", "*", "0.0.0.0", "::")}
    if len(ports) != 1:
        raise ValueError(f"haproxy.cfg: expected one frontend bound on all addresses, found ports {sorted(ports)}")
    return ports.pop()


def ports_bound_on(haproxy_cfg: str, address: str) -> list[int]:
    """The ports of the frontends bound on one address (a node's own: the metrics frontend)."""
    return sorted({int(port) for addr, port in _BIND.findall(haproxy_cfg) if addr == address})


_GLOBAL_MAXCONN = re.compile(r"^global\b(?:\n(?!\S).*)*?\n\s+maxconn\s+(\d+)", re.MULTILINE)


def global_maxconn(haproxy_cfg: str) -> int | None:
    """`maxconn` of haproxy.cfg's global section, if set."""
    m = _GLOBAL_MAXCONN.search(haproxy_cfg)
    return int(m.group(1)) if m else None


_CHECK_SEND = re.compile(r"^[ \t]*http-check[ \t]+send[ \t].*?\buri[ \t]+(\S+).*$", re.MULTILINE)


def check_send(haproxy_cfg: str) -> tuple[str, str]:
    """The one `http-check send ... uri X` line of haproxy.cfg (stripped) and its URI: what haproxy
    asks each apiserver."""
    found = list(_CHECK_SEND.finditer(haproxy_cfg))
    if len(found) != 1:
        raise ValueError(f"haproxy.cfg: expected one 'http-check send ... uri' line, found {len(found)}")
    return found[0].group(0).strip(), found[0].group(1)
