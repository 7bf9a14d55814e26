"""Read the synthesized cdk.tf.json into the few facts the lab builds from.

Only the JSON is trusted, never the Python objects that produced it: a wrong reference or a
missing rule in the JSON must show up in the lab. Every `${type.name.id}` reference is resolved
by type and name; anything the lab cannot interpret is an error, not a guess.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import configs
from userdata.extract import DockerRun, docker_runs, node_text, parse_docker_run, written_files
from userdata.extract import WrittenFile as File

PORT = "openstack_networking_port_v2"
SECGROUP = "openstack_networking_secgroup_v2"
RULE = "openstack_networking_secgroup_rule_v2"
INSTANCE = "openstack_compute_instance_v2"
VRRP = "112"

_REF = re.compile(r"^\$\{([A-Za-z0-9_]+)\.([A-Za-z0-9_-]+)\.id\}$")
_PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "vrrp": VRRP}


class SynthError(ValueError):
    """The synthesized JSON says something the lab cannot build."""


@dataclass(frozen=True)
class Rule:
    """One security group rule; protocol None means any protocol, ports None any port."""

    name: str
    secgroup: str
    direction: str
    protocol: str | None
    port_min: int | None
    port_max: int | None
    remote_prefix: str | None
    remote_group: str | None


@dataclass(frozen=True)
class Port:
    """A Neutron port: the addresses it may use and the groups that filter it."""

    resource: str
    name: str
    fixed_ips: tuple[str, ...]
    pairs: tuple[str, ...]
    secgroups: tuple[str, ...]
    port_security: bool

    @property
    def addresses(self) -> tuple[str, ...]:
        """What port security lets the port send from (and what remote groups contain)."""
        return self.fixed_ips + tuple(a for a in self.pairs if a not in self.fixed_ips)


@dataclass(frozen=True)
class Node:
    """A VM: its name, its one port, the files its user_data writes and the containers it runs."""

    name: str
    port: Port
    files: tuple[File, ...]
    user_data: str  # as the VM receives it (Terraform's escapes undone)
    containers: dict[str, DockerRun]

    @property
    def address(self) -> str:
        return self.port.fixed_ips[0]

    def file(self, path: str) -> File:
        for f in self.files:
            if f.path == path:
                return f
        raise SynthError(f"{self.name}: user_data writes no {path} (it writes {[f.path for f in self.files]})")


@dataclass(frozen=True)
class Stack:
    """What the lab builds: nodes, the VIP port, and the rules that filter node ports."""

    nodes: tuple[Node, ...]
    vip_port: Port
    ports: tuple[Port, ...]
    rules: tuple[Rule, ...]
    open_egress: frozenset[str]
    subnet: str

    @property
    def vip(self) -> str:
        return self.vip_port.fixed_ips[0]

    def images(self) -> dict[str, str]:
        """Container name -> image reference, the same on every node (else an error)."""
        refs: dict[str, str] = {}
        for node in self.nodes:
            for name, run in node.containers.items():
                if refs.setdefault(name, run.image) != run.image:
                    raise SynthError(f"{node.name}: container {name} runs {run.image}, other nodes {refs[name]}")
        return refs

    def members(self, secgroup: str) -> tuple[str, ...]:
        """A remote group as Neutron's ipsets see it: member ports' fixed IPs and address pairs."""
        out: list[str] = []
        for port in self.ports:
            if secgroup in port.secgroups:
                out.extend(a for a in port.addresses if a not in out)
        return tuple(out)

    def client_address(self, taken: tuple[str, ...] = ()) -> str:
        """An unused address in the subnet for the client namespace (.200 in a /24 when free)."""
        net = ipaddress.ip_network(self.subnet)
        used = {a for p in self.ports for a in p.addresses} | set(taken)
        hosts = list(net.hosts())
        for host in hosts[199:] + hosts[:199][::-1]:
            if str(host) not in used:
                return str(host)
        raise SynthError(f"no free address left in {self.subnet}")


    def default_gateway(self) -> str:
        """The subnet's gateway where Neutron puts it by default, its first address: the JSON reads
        the subnet as a data source, so it does not say."""
        first = str(next(ipaddress.ip_network(self.subnet).hosts()))
        if any(first in p.addresses for p in self.ports):
            raise SynthError(f"a port uses {first}, the first address of {self.subnet}, where the gateway would be")
        return first

    def ingress_prefixes(self, port: int, protocol: str = "tcp") -> tuple[str, ...]:
        """The remote_ip_prefix of every ingress rule that admits `protocol` to `port` (SSH: access.admin_cidrs)."""
        return tuple(
            r.remote_prefix
            for r in self.rules
            if r.direction == "ingress" and r.remote_prefix and r.protocol in (None, protocol)
            and (r.port_min is None or r.port_min <= port <= (r.port_max if r.port_max is not None else r.port_min))
        )  # fmt: skip


def find_synth_json(root: Path) -> Path:
    """The one `cdktf.out/stacks/*/cdk.tf.json` under the project root."""
    found = sorted(root.glob("cdktf.out/stacks/*/cdk.tf.json"))
    if len(found) != 1:
        raise SynthError(f"expected one cdktf.out/stacks/*/cdk.tf.json under {root}, found {[str(p) for p in found]}")
    return found[0]


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _ref(value: str, want: str, where: str, resources: dict) -> str:
    m = _REF.match(value)
    if not m or m.group(1) != want:
        raise SynthError(f"{where}: expected a reference ${{{want}.<name>.id}}, got {value!r}")
    if m.group(2) not in resources.get(want, {}):
        raise SynthError(f"{where}: {value!r} names no {want} in the JSON")
    return m.group(2)


def _protocol(value: object) -> str | None:
    if value in (None, "", "any"):
        return None
    text = str(value).lower()
    return _PROTOCOL_NAMES.get(text, text)


def _rules(resources: dict) -> tuple[Rule, ...]:
    out = []
    for name, r in resources.get(RULE, {}).items():
        where = f"{RULE}.{name}"
        if r.get("ethertype", "IPv4") != "IPv4":
            continue  # the lab is IPv4 only; IPv6 traffic is dropped on every node port
        remote_group = r.get("remote_group_id")
        out.append(
            Rule(
                name=name,
                secgroup=_ref(r["security_group_id"], SECGROUP, where, resources),
                direction=r["direction"],
                protocol=_protocol(r.get("protocol")),
                port_min=r.get("port_range_min"),
                port_max=r.get("port_range_max"),
                remote_prefix=r.get("remote_ip_prefix"),
                remote_group=_ref(remote_group, SECGROUP, where, resources) if remote_group else None,
            )
        )
    return tuple(out)


def _ports(resources: dict) -> dict[str, Port]:
    out = {}
    for name, p in resources.get(PORT, {}).items():
        where = f"{PORT}.{name}"
        out[name] = Port(
            resource=name,
            name=p.get("name", name),
            fixed_ips=tuple(ip["ip_address"] for ip in p.get("fixed_ip", [])),
            pairs=tuple(pair["ip_address"] for pair in p.get("allowed_address_pairs", [])),
            secgroups=tuple(_ref(s, SECGROUP, where, resources) for s in p.get("security_group_ids", [])),
            port_security=p.get("port_security_enabled", True),
        )
        if not out[name].fixed_ips:
            raise SynthError(f"{where}: no literal fixed_ip.ip_address; the lab needs fixed addresses")
    return out


def _node(instance: str, name: str, port: Port, user_data: str) -> Node:
    try:
        return Node(name, port, tuple(written_files(user_data).values()), node_text(user_data), docker_runs(user_data))
    except ValueError as err:
        raise SynthError(f"{instance}: {err}") from None


def _subnet(ports: dict[str, Port]) -> str:
    """The /24 holding every port address: the synthesized JSON reads the subnet as a data source."""
    addresses = {a for p in ports.values() for a in p.addresses}
    nets = {ipaddress.ip_network(f"{a}/24", strict=False) for a in addresses}
    if len(nets) != 1:
        raise SynthError(f"port addresses {sorted(addresses)} are not in one /24")
    return str(nets.pop())


def parse(doc: dict) -> Stack:
    """Turn the synthesized JSON into a Stack; raises SynthError naming the resource at fault."""
    resources = doc.get("resource", {})
    ports = _ports(resources)
    nodes = []
    for name, inst in sorted(resources.get(INSTANCE, {}).items(), key=lambda kv: kv[1].get("name", kv[0])):
        where = f"{INSTANCE}.{name}"
        networks = inst.get("network", [])
        if len(networks) != 1 or "port" not in networks[0]:
            raise SynthError(f"{where}: expected exactly one network block with a port, got {networks}")
        port = ports[_ref(networks[0]["port"], PORT, where, resources)]
        nodes.append(_node(where, inst.get("name", name), port, inst.get("user_data", "")))
    if not nodes:
        raise SynthError(f"the JSON has no {INSTANCE}")
    bound = {n.port.resource for n in nodes}
    unbound = [p for p in ports.values() if p.resource not in bound]
    if len(unbound) != 1:
        raise SynthError(f"expected one port no instance uses (the VIP port), found {[p.resource for p in unbound]}")
    secgroups = resources.get(SECGROUP, {})
    return Stack(
        nodes=tuple(nodes),
        vip_port=unbound[0],
        ports=tuple(ports.values()),
        rules=_rules(resources),
        open_egress=frozenset(n for n, sg in secgroups.items() if not sg.get("delete_default_rules", False)),
        subnet=_subnet(ports),
    )


def without_vrrp_rules(doc: dict) -> dict:
    """Negative control: the same JSON with every VRRP (IP protocol 112) rule removed."""
    out = copy.deepcopy(doc)
    rules = out["resource"].get(RULE, {})
    removed = [n for n, r in rules.items() if _protocol(r.get("protocol")) == VRRP]
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


_FLOW_ENTRY = re.compile(r"^(\s*- )(\[.*\])\s*$")  # a runcmd entry written as a one-line flow sequence


def with_docker_run(doc: dict, container: str, edit, what: str) -> dict:
    """A copy of the JSON whose `docker run` line for `container` is `edit(argv)` on every node.

    The line is found and rewritten in the user_data text (one runcmd entry written as a one-line
    flow sequence, as the template renders it), and the result is parsed back."""
    out = copy.deepcopy(doc)
    for name, inst in out["resource"].get(INSTANCE, {}).items():
        lines = inst["user_data"].split("\n")
        hits = 0
        for i, line in enumerate(lines):
            m = _FLOW_ENTRY.match(line)
            argv = yaml.safe_load(m.group(2)) if m else None
            if not (isinstance(argv, list) and argv[:2] == ["docker", "run"] and parse_docker_run(argv).name == container):
                continue
            edited = edit(list(argv))
            if edited == argv:
                raise SynthError(f"{INSTANCE}.{name}: {what}: the {container} line does not change ({argv})")
            lines[i] = m.group(1) + json.dumps(edited)
            hits += 1
        if hits != 1:
            raise SynthError(f"{INSTANCE}.{name}: {what}: expected one docker run line for {container}, found {hits}")
        inst["user_data"] = "\n".join(lines)
        if docker_runs(inst["user_data"])[container].argv != tuple(edited):
            raise SynthError(f"{INSTANCE}.{name}: {what}: the edited line does not read back")
    return out


def with_file_line(doc: dict, path: str, old: str, new: str) -> dict:
    """A copy of the JSON in which one line of the file `path` reads `new` instead of `old`, on every
    node: a change as an edited template would make it. The line is found by its text without
    indentation, must be the only such line of the user_data, and keeps its indentation; the
    result is parsed back to check that only that file changed."""
    out = copy.deepcopy(doc)
    for name, inst in out["resource"].get(INSTANCE, {}).items():
        where = f"{INSTANCE}.{name}"
        lines = inst["user_data"].split("\n")
        hits = [i for i, line in enumerate(lines) if line.strip() == old]
        if len(hits) != 1:
            raise SynthError(f"{where}: expected one line {old!r} in user_data, found {len(hits)}")
        line = lines[hits[0]]
        lines[hits[0]] = line[: len(line) - len(line.lstrip())] + new
        before, after = written_files(inst["user_data"]), written_files("\n".join(lines))
        if path not in before or {p for p in before if before[p] != after[p]} != {path}:
            raise SynthError(f"{where}: the line {old!r} is not in {path} alone")
        inst["user_data"] = "\n".join(lines)
    return out


def with_check_uri(doc: dict, haproxy_cfg: str, uri: str) -> dict:
    """A copy of the JSON whose haproxy checks each apiserver's `uri` instead (the `http-check send`
    line of the file `haproxy_cfg`), on every node."""
    line, current = configs.check_send(parse(doc).nodes[0].file(haproxy_cfg).content)
    if current == uri:
        raise SynthError(f"haproxy already checks {uri}: {line!r}")
    return with_file_line(doc, haproxy_cfg, line, re.sub(rf"(\buri\s+){re.escape(current)}(?=\s|$)", rf"\g<1>{uri}", line))


def _replace_pair(argv: list[str], option: str, old: str, new: str | None) -> list[str]:
    """`option old` -> `option new` (or removed when new is None), exactly once."""
    at = [i for i in range(len(argv) - 1) if argv[i] == option and argv[i + 1] == old]
    if len(at) != 1:
        raise SynthError(f"expected one '{option} {old}' in {argv}")
    i = at[0]
    return argv[:i] + ([option, new] if new is not None else []) + argv[i + 2 :]


def with_haproxy_network_none(doc: dict, container: str = "haproxy") -> dict:
    """Negative control: haproxy runs with `--network none` instead of `--network host`."""
    return with_docker_run(doc, container, lambda a: _replace_pair(a, "--network", "host", "none"), "--network none")


def without_net_admin(doc: dict, container: str = "keepalived") -> dict:
    """Negative control: keepalived runs without `--cap-add NET_ADMIN`."""
    return with_docker_run(doc, container, lambda a: _replace_pair(a, "--cap-add", "NET_ADMIN", None), "no NET_ADMIN")


_NOFILE = re.compile(r"^nofile=(\d+):(\d+)$")


def fit_open_files(doc: dict, hard_limit: int, headroom: int, container: str = "haproxy") -> tuple[dict, list[str]]:
    """A copy of the JSON whose haproxy fits a machine whose hard open-files limit is `hard_limit`.

    Where the haproxy line's `--ulimit nofile=S:H` exceeds it (runc cannot set it: the container
    would not start), the ulimit becomes `hard_limit:hard_limit`, and where haproxy.cfg's global
    maxconn then needs more than that (2 x maxconn + headroom), maxconn becomes what fits.
    Returns the copy and one line per change, for the lab to announce."""
    notes: list[str] = []
    stack = parse(doc)
    limits = {v for n in stack.nodes if container in n.containers for v in n.containers[container].values("--ulimit")}
    nofile = sorted(v for v in limits if v.startswith("nofile="))
    limit = hard_limit
    if len(nofile) > 1:
        raise SynthError(f"{container}: nodes differ in --ulimit {nofile}")
    if nofile:
        m = _NOFILE.match(nofile[0])
        if not m:
            raise SynthError(f"{container}: cannot read --ulimit {nofile[0]!r}")
        if int(m.group(2)) > hard_limit:
            fitted = f"nofile={hard_limit}:{hard_limit}"
            doc = with_docker_run(doc, container, lambda a: _replace_pair(a, "--ulimit", nofile[0], fitted), "fit nofile")
            notes.append(f"{container} --ulimit {nofile[0]} -> {fitted} on every node "
                         f"(this machine's hard open-files limit is {hard_limit}; runc cannot set more)")  # fmt: skip
        limit = min(int(m.group(2)), hard_limit)
    out = copy.deepcopy(doc)
    fitted_conn = (limit - headroom) // 2
    changed = []
    for name, inst in out["resource"].get(INSTANCE, {}).items():
        text = inst["user_data"]
        cfg = next((f for f in written_files(text).values() if f.path.endswith("/haproxy.cfg")), None)
        maxconn = configs.global_maxconn(cfg.content) if cfg else None
        if maxconn is None or 2 * maxconn + headroom <= limit:
            continue
        line = re.compile(rf"^(\s+maxconn ){maxconn}$", re.MULTILINE)
        if len(line.findall(text)) != 1:
            raise SynthError(f"{INSTANCE}.{name}: expected one 'maxconn {maxconn}' line in user_data")
        inst["user_data"] = line.sub(rf"\g<1>{fitted_conn}", text)
        changed.append(maxconn)
    if changed:
        notes.append(f"haproxy.cfg maxconn {max(changed)} -> {fitted_conn} on {len(changed)} nodes "
                     f"(2 x maxconn + {headroom} must fit the open-files limit {limit})")  # fmt: skip
    return out, notes
