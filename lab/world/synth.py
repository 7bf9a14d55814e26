"""The lab's view of the synthesized cdk.tf.json, and the copy of it the lab runs.

The JSON is read by `userdata.stack` (references resolved, anything it cannot interpret an
error), the cloud-config in it by `userdata.cloudconfig`; only the JSON is trusted, so a wrong
reference or a missing rule must show up in the lab. Here: what the lab needs besides (literal
addresses, the VIP port, the subnet, the rules that filter node ports), the open-files fit to this
machine, and the edits of a copy's user_data that it and the scenarios' variants
(`lab.scenarios.variants`) make.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from userdata import cloudconfig, configs
from userdata.stack import INSTANCE, PORT, Instance, Node, Port, Rule, SynthesizedStack, read, with_user_data
from userdata.stack import StackError as SynthError  # the lab's name for it: what the lab cannot build


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
        return members(self.ports, secgroup)

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
            if r.direction == "ingress"
            and r.remote_prefix
            and r.protocol in (None, protocol)
            and (r.port_min is None or r.port_min <= port <= (r.port_max if r.port_max is not None else r.port_min))
        )


def members(ports: tuple[Port, ...], secgroup: str) -> tuple[str, ...]:
    """A remote group as Neutron's ipsets see it: member ports' fixed IPs and address pairs."""
    out: list[str] = []
    for port in ports:
        if secgroup in port.secgroups:
            out.extend(a for a in port.addresses if a not in out)
    return tuple(out)


def find_synth_json(root: Path) -> Path:
    """The one `cdktf.out/stacks/*/cdk.tf.json` under the project root."""
    found = sorted(root.glob("cdktf.out/stacks/*/cdk.tf.json"))
    if len(found) != 1:
        raise SynthError(f"expected one cdktf.out/stacks/*/cdk.tf.json under {root}, found {[str(p) for p in found]}")
    return found[0]


def load(path: Path) -> dict:
    return read(path)


def _subnet(ports: dict[str, Port]) -> str:
    """The /24 holding every port address: the synthesized JSON reads the subnet as a data source."""
    addresses = {a for p in ports.values() for a in p.addresses}
    nets = {ipaddress.ip_network(f"{a}/24", strict=False) for a in addresses}
    if len(nets) != 1:
        raise SynthError(f"port addresses {sorted(addresses)} are not in one /24")
    return str(nets.pop())


def parse(doc: dict) -> Stack:
    """Turn the synthesized JSON into a Stack; raises SynthError naming the resource at fault."""
    synthesized = SynthesizedStack(doc)
    ports = synthesized.ports
    for port in ports.values():
        if not port.fixed_ips:
            raise SynthError(f"{PORT}.{port.resource}: no literal fixed_ip.ip_address; the lab needs fixed addresses")
    nodes = synthesized.nodes()
    if not nodes:
        raise SynthError(f"the JSON has no {INSTANCE}")
    bound = {n.port.resource for n in nodes}
    unbound = [p for p in ports.values() if p.resource not in bound]
    if len(unbound) != 1:
        raise SynthError(f"expected one port no instance uses (the VIP port), found {[p.resource for p in unbound]}")
    return Stack(
        nodes=nodes,
        vip_port=unbound[0],
        ports=tuple(ports.values()),
        # The lab is IPv4 only; IPv6 traffic is dropped on every node port.
        rules=tuple(r for r in synthesized.rules if r.ethertype == "IPv4"),
        open_egress=frozenset(n for n, sg in synthesized.secgroups.items() if not sg.delete_default_rules),
        subnet=_subnet(ports),
    )


def edited_user_data(doc: dict, edit: Callable[[str], str], what: str = "") -> dict:
    """A copy of the JSON whose user_data is `edit(user_data)` on every node (a cloudconfig edit)."""

    def one(inst: Instance) -> str:
        try:
            return edit(inst.user_data)
        except cloudconfig.CloudConfigError as err:
            raise SynthError(f"{inst.where}: {what + ': ' if what else ''}{err}") from None

    return with_user_data(doc, one)


def with_docker_run(doc: dict, container: str, edit: Callable[[list[str]], list[str]], what: str) -> dict:
    """A copy of the JSON whose `docker run` line for `container` is `edit(argv)` on every node
    (see cloudconfig.with_docker_run)."""
    return edited_user_data(doc, lambda user_data: cloudconfig.with_docker_run(user_data, container, edit), what)


def replace_pair(argv: list[str], option: str, old: str, new: str | None) -> list[str]:
    """`option old` -> `option new` (or removed when new is None), exactly once."""
    at = [i for i in range(len(argv) - 1) if argv[i] == option and argv[i + 1] == old]
    if len(at) != 1:
        raise SynthError(f"expected one '{option} {old}' in {argv}")
    i = at[0]
    return argv[:i] + ([option, new] if new is not None else []) + argv[i + 2 :]


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
        fitted, limit = _fit_nofile(nofile[0], hard_limit, container)
        if fitted:
            doc = with_docker_run(
                doc, container, lambda a: replace_pair(a, "--ulimit", nofile[0], fitted), "fit nofile"
            )
            notes.append(
                f"{container} --ulimit {nofile[0]} -> {fitted} on every node "
                f"(this machine's hard open-files limit is {hard_limit}; runc cannot set more)"
            )
    changed = []

    def fit_maxconn(user_data: str) -> str:
        text, maxconn = _fit_maxconn(user_data, limit, headroom)
        if maxconn is not None:
            changed.append(maxconn)
        return text

    out = edited_user_data(doc, fit_maxconn)
    if changed:
        notes.append(
            f"haproxy.cfg maxconn {max(changed)} -> {(limit - headroom) // 2} on {len(changed)} nodes "
            f"(2 x maxconn + {headroom} must fit the open-files limit {limit})"
        )
    return out, notes


def _fit_nofile(value: str, hard_limit: int, container: str) -> tuple[str | None, int]:
    """The `--ulimit nofile=S:H` that fits `hard_limit` (None: it fits) and the open-files limit then."""
    m = _NOFILE.match(value)
    if not m:
        raise SynthError(f"{container}: cannot read --ulimit {value!r}")
    hard = int(m.group(2))
    return (f"nofile={hard_limit}:{hard_limit}" if hard > hard_limit else None), min(hard, hard_limit)


def _fit_maxconn(user_data: str, limit: int, headroom: int) -> tuple[str, int | None]:
    """user_data whose haproxy.cfg global maxconn fits `limit` open files (2 x maxconn + headroom),
    and the maxconn it replaced (None: it fitted)."""
    cfg = next((f for f in cloudconfig.written_files(user_data).values() if f.path.endswith("/haproxy.cfg")), None)
    maxconn = configs.global_maxconn(cfg.content) if cfg else None
    if cfg is None or maxconn is None or 2 * maxconn + headroom <= limit:
        return user_data, None
    fitted = (limit - headroom) // 2
    return cloudconfig.with_file_line(user_data, cfg.path, f"maxconn {maxconn}", f"maxconn {fitted}"), maxconn


def fit_user_data(user_data: str, hard_limit: int, headroom: int, container: str = "haproxy") -> tuple[str, list[str]]:
    """One node's user_data (as the VM receives it) fitted as `fit_open_files` fits the JSON:
    the container's `--ulimit nofile` to `hard_limit`, then haproxy.cfg's maxconn to what fits."""
    notes: list[str] = []
    limit = hard_limit
    run = cloudconfig.docker_runs(user_data).get(container)
    nofile = [v for v in (run.values("--ulimit") if run else []) if v.startswith("nofile=")]
    if nofile:
        fitted, limit = _fit_nofile(nofile[0], hard_limit, container)
        if fitted:
            user_data = cloudconfig.with_docker_run(
                user_data, container, lambda a: replace_pair(a, "--ulimit", nofile[0], str(fitted))
            )
            notes.append(f"{container} --ulimit {nofile[0]} -> {fitted} (this machine's hard open-files limit)")
    user_data, maxconn = _fit_maxconn(user_data, limit, headroom)
    if maxconn is not None:
        notes.append(f"haproxy.cfg maxconn {maxconn} -> {(limit - headroom) // 2} (fits {limit} open files)")
    return user_data, notes
