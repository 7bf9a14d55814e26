"""The only place raw input is trusted: one YAML file per cluster becomes a frozen, validated model.

Every problem found is reported as one line that names the field, shows the value and says what
is allowed; nothing downstream ever sees an invalid config.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from cluster import derive
from cluster import kubernetes as kube

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "example.yaml"

# Stacked etcd lives on these nodes: an odd count keeps quorum meaningful (an even count adds a
# member without adding fault tolerance), one node is no HA, and etcd advises against more than 7.
ALLOWED_NODE_COUNTS = (3, 5, 7)

DNS_LABEL = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
DNS_LABEL_MAX = 32
INTERFACE = r"^[a-zA-Z0-9_.-]{1,15}$"
REGION = r"^[A-Za-z0-9._-]{1,64}$"
# Kubernetes' cluster domain: dot-separated DNS labels.
DNS_DOMAIN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
# Without nodes.members the nodes are named after the cluster (`cluster.derive.node_names`, n at
# most 7), and each such name is a DNS label too: the cluster's name leaves room for the suffix.
NAME_MAX_WITHOUT_MEMBERS = DNS_LABEL_MAX - len(derive.NODE_SUFFIX.format(max(ALLOWED_NODE_COUNTS)))
# repository[:tag][@sha256:digest]; the registry part may carry a port.
IMAGE_REF = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+|:[0-9]+/[a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


class ConfigError(Exception):
    """A config that must not be synthesized; `problems` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        header = f"invalid config {source}" if source else "invalid config"
        super().__init__(header + ":\n" + "\n".join(f"  - {p}" for p in problems))


def _strict_network(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Network):
        return value
    if not isinstance(value, str):
        raise ValueError("not an IPv4 CIDR; write one such as 10.0.0.0/8")
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as err:
        try:
            loose = ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            if ":" in value:
                raise ValueError("an IPv6 CIDR; only IPv4 is supported") from None
            raise ValueError(
                f"not an IPv4 CIDR ({err}); write address/prefix: four numbers 0-255 and a prefix length 0-32, "
                "such as 10.0.0.0/8"
            ) from None
        raise ValueError(f"host bits are set; did you mean {loose}?") from None


# A network written exactly (no host bits), so a typo is never silently widened or narrowed.
Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_strict_network)]


def _strict_address(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    if not isinstance(value, str):
        raise ValueError("not an IPv4 address; write one such as 192.0.2.10")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ValueError("not an IPv4 address; write one such as 192.0.2.10") from None
        raise ValueError(
            "an IPv6 address; only IPv4 is supported (keepalived's VRRP and the security group rules are IPv4)"
        ) from None


# Only a written address: a YAML integer would otherwise become one (5 -> 0.0.0.5).
Address = Annotated[ipaddress.IPv4Address, BeforeValidator(_strict_address)]
# YAML already types numbers and booleans: a quoted "9443" or "true" is a mistake, not a value.
Int = Annotated[int, Strict()]


def _no_template(value: str) -> str:
    if "${" in value or "%{" in value:
        raise ValueError("must not contain '${' or '%{': Terraform would read it as a template")
    return value


# A name handed to OpenStack through the JSON, where Terraform reads every string as a template.
Text = Annotated[str, Field(min_length=1), AfterValidator(_no_template)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Ref(_Model):
    """An existing OpenStack object, named by exactly one of name or id."""

    name: Text | None = None
    id: Text | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Ref:
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of 'name' or 'id'")
        return self


class Subnet(Ref):
    cidr: Cidr
    gateway: Address | None = None


class Network(Ref):
    subnet: Subnet
    # The nodes' interface on this network, as the image names it (keepalived binds the VIP there).
    interface: Annotated[str, Field(pattern=INTERFACE)] = "ens3"

    @property
    def identity(self) -> str:
        return f"id:{self.id}" if self.id else f"name:{self.name}"


class Vip(_Model):
    address: Address
    floating_ip_pool: Text | None = None
    virtual_router_id: Annotated[Int, Field(ge=1, le=255)] | None = None


class Member(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL)]
    address: Address | None = None


class Nodes(_Model):
    count: Int = 3
    image: Text
    flavor: Text
    key_pair: Text
    anti_affinity: Literal["hard", "soft"] = "hard"
    extra_security_groups: tuple[Text, ...] = ()
    members: tuple[Member, ...] | None = None

    @field_validator("count")
    @classmethod
    def _supported_count(cls, value: int) -> int:
        if value not in ALLOWED_NODE_COUNTS:
            raise ValueError(
                f"allowed: {', '.join(map(str, ALLOWED_NODE_COUNTS))} "
                "(stacked etcd needs an odd count; 1 is not highly available)"
            )
        return value


class Access(_Model):
    client_cidrs: tuple[Cidr, ...]
    admin_cidrs: tuple[Cidr, ...] = ()
    # Who may scrape each node's metrics port (Prometheus); none by default.
    monitoring_cidrs: tuple[Cidr, ...] = ()
    allow_api_from_anywhere: StrictBool = False
    allow_ssh_from_anywhere: StrictBool = False

    @field_validator("client_cidrs")
    @classmethod
    def _some_clients(cls, value: tuple[ipaddress.IPv4Network, ...]) -> tuple[ipaddress.IPv4Network, ...]:
        if not value:
            raise ValueError("empty — name at least one CIDR that may reach the API (workers, bastions, CI)")
        return value


Port = Annotated[Int, Field(ge=1, le=65535)]


class Ports(_Model):
    frontend: Port = 9443
    apiserver: Port = 6443
    health: Port = 9444
    # haproxy's Prometheus exporter and keepalived's state, on each node's own address.
    metrics: Port = 8405


class Containers(_Model):
    haproxy: str
    keepalived: str

    @field_validator("haproxy", "keepalived")
    @classmethod
    def _pinned(cls, value: str) -> str:
        match = IMAGE_REF.match(value)
        if not match:
            raise ValueError("not an image reference; expected repository:tag or repository@sha256:<64 hex>")
        if not match["digest"] and (not match["tag"] or match["tag"] == "latest"):
            raise ValueError(
                "pin the image with a version tag or, better, a digest (@sha256:...); 'latest' or no tag is not allowed"
            )
        return value


class Kubernetes(_Model):
    """What kubeadm is told: each node's userdata writes its kubeadm configuration from this."""

    version: str = kube.KUBERNETES_VERSION
    pod_subnet: Cidr = ipaddress.IPv4Network(kube.DEFAULT_POD_SUBNET)
    service_subnet: Cidr = ipaddress.IPv4Network(kube.DEFAULT_SERVICE_SUBNET)
    dns_domain: Annotated[str, Field(pattern=DNS_DOMAIN)] = "cluster.local"
    # kube-apiserver flag (without '--') -> value, as kubeadm's apiServer.extraArgs carries them.
    apiserver_args: dict[str, StrictStr] = {}

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        return kube.supported_version(value)


# AWS's naming rules for general purpose S3 buckets: S3-compatible stores may accept more, but a
# name that follows these moves between stores. Each entry: (is the rule broken?, what is allowed).
_BUCKET_RULES: tuple[tuple[Any, str], ...] = (
    (lambda b: not 3 <= len(b) <= 63, "must be 3-63 characters long"),
    (lambda b: not re.fullmatch(r"[a-z0-9.-]+", b), "may hold only lowercase letters, digits, dots and hyphens"),
    (lambda b: not (b[0].isalnum() and b[-1].isalnum()), "must start and end with a letter or digit"),
    (lambda b: ".." in b, "must not contain two adjacent dots"),
    (lambda b: re.fullmatch(r"\d+\.\d+\.\d+\.\d+", b), "must not look like an IP address"),
    (lambda b: b.startswith(("xn--", "sthree-")), "must not start with 'xn--' or 'sthree-'"),
    (lambda b: b.endswith(("-s3alias", "--ol-s3")), "must not end with '-s3alias' or '--ol-s3'"),
)


class State(_Model):
    """Where Terraform keeps this cluster's state; credentials for it come from the environment only."""

    backend: Literal["local", "s3"] = "local"
    bucket: str | None = None
    key: str | None = None
    region: Annotated[str, Field(pattern=REGION)] | None = None
    # An S3-compatible store (Swift s3api, Ceph RGW, MinIO...); absent means AWS S3 itself.
    endpoint: str | None = None
    use_path_style: StrictBool = False
    encrypt: StrictBool = True
    use_lockfile: StrictBool = True
    allow_insecure_endpoint: StrictBool = False

    @field_validator("bucket")
    @classmethod
    def _s3_bucket_name(cls, value: str | None) -> str | None:
        if value is not None:
            for broken, rule in _BUCKET_RULES:
                if broken(value):
                    raise ValueError(f"not an S3 bucket name: {rule}")
        return value

    @field_validator("key")
    @classmethod
    def _object_key(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("/") or value.endswith("/") or "//" in value):
            raise ValueError(
                "an object path such as clusters/demo/terraform.tfstate: not empty, no leading or trailing '/', no '//'"
            )
        return value


class ClusterConfig(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL)]
    network: Network
    vip: Vip
    nodes: Nodes
    access: Access
    ports: Ports = Ports()
    containers: Containers
    kubernetes: Kubernetes = Kubernetes()
    state: State = State()
    # Every plan refuses to destroy (or replace) a node, its port, the VIP port, the server group
    # and the floating IP while this is false: true only for a planned teardown (docs/operate.md, "Day 2").
    allow_destroy: StrictBool = False

    @property
    def state_key(self) -> str:
        """The object holding this cluster's state in its bucket."""
        return self.state.key or f"{self.name}/terraform.tfstate"


# ---------------------------------------------------------------------------------------------
# Cross-field checks: each returns problems as (field, value, what is allowed).


def _semantic_problems(cfg: ClusterConfig) -> list[str]:
    problems: list[str] = []

    def bad(field: str, value: Any, allowed: str) -> None:
        problems.append(f"{field}: {value!s} — {allowed}")

    subnet = cfg.network.subnet.cidr
    if subnet.prefixlen > 29:
        bad("network.subnet.cidr", subnet, "a /29 or larger subnet is needed for a VIP, a gateway and the nodes")
    reserved = {
        subnet.network_address: "the subnet's network address",
        subnet.broadcast_address: "the subnet's broadcast address",
    }
    gateway = cfg.network.subnet.gateway
    if gateway is not None:
        if gateway not in subnet or gateway in reserved:
            bad("network.subnet.gateway", gateway, f"must be a host address inside {subnet}")
    reserved[derive.gateway(subnet, gateway)] = "the subnet's gateway"

    def check_host(field: str, address: ipaddress.IPv4Address) -> bool:
        if address not in subnet:
            bad(field, address, f"must be inside network.subnet.cidr {subnet}")
            return False
        if address in reserved:
            bad(field, address, f"is {reserved[address]}; use another host address of {subnet}")
            return False
        return True

    check_host("vip.address", cfg.vip.address)

    members = cfg.nodes.members
    if members is None and len(cfg.name) > NAME_MAX_WITHOUT_MEMBERS:
        bad(
            "name",
            f"{cfg.name} ({len(cfg.name)} characters)",
            f"at most {NAME_MAX_WITHOUT_MEMBERS} characters without nodes.members: the nodes are named "
            f"{cfg.name}{derive.NODE_SUFFIX.format('<n>')}, a DNS label of at most {DNS_LABEL_MAX}; "
            "shorten it or list nodes.members",
        )
    if members is not None:
        if len(members) != cfg.nodes.count:
            bad(
                "nodes.members", f"{len(members)} members", f"must list exactly nodes.count = {cfg.nodes.count} members"
            )
        seen_names: dict[str, int] = {}
        seen_addresses: dict[ipaddress.IPv4Address, int] = {}
        with_address = [m.address is not None for m in members]
        if any(with_address) and not all(with_address):
            bad(
                "nodes.members",
                "some members without address",
                "give every member an address, or none (Neutron allocates)",
            )
        for i, member in enumerate(members):
            field = f"nodes.members[{i}]"
            if member.name in seen_names:
                bad(
                    f"{field}.name",
                    member.name,
                    f"duplicate of nodes.members[{seen_names[member.name]}].name; names must be unique",
                )
            seen_names.setdefault(member.name, i)
            if member.address is None:
                continue
            if member.address == cfg.vip.address:
                bad(f"{field}.address", member.address, "equals vip.address; the VIP needs its own address")
            elif check_host(f"{field}.address", member.address) and member.address in seen_addresses:
                bad(
                    f"{field}.address",
                    member.address,
                    f"duplicate of nodes.members[{seen_addresses[member.address]}].address",
                )
            seen_addresses.setdefault(member.address, i)

    ports = cfg.ports
    if ports.frontend == ports.apiserver:
        bad(
            "ports.frontend",
            ports.frontend,
            f"must differ from ports.apiserver ({ports.apiserver}): haproxy and kube-apiserver share each node",
        )
    if ports.health in (ports.frontend, ports.apiserver):
        bad("ports.health", ports.health, "must differ from ports.frontend and ports.apiserver")
    if ports.metrics in (ports.frontend, ports.apiserver, ports.health):
        bad("ports.metrics", ports.metrics, "must differ from ports.frontend, ports.apiserver and ports.health")

    lists = {f"access.{f}": getattr(cfg.access, f) for f in ("client_cidrs", "admin_cidrs", "monitoring_cidrs")}
    lists["nodes.extra_security_groups"] = cfg.nodes.extra_security_groups
    for field, items in lists.items():
        first: dict[Any, int] = {}
        for i, item in enumerate(items):
            if item in first:
                bad(f"{field}[{i}]", item, f"duplicate of {field}[{first[item]}]; list each entry once")
            first.setdefault(item, i)

    anywhere = ipaddress.IPv4Network("0.0.0.0/0")
    if anywhere in cfg.access.client_cidrs and not cfg.access.allow_api_from_anywhere:
        bad(
            "access.client_cidrs",
            anywhere,
            "opens the API to the whole internet; set access.allow_api_from_anywhere: true to mean it",
        )
    if anywhere in cfg.access.admin_cidrs and not cfg.access.allow_ssh_from_anywhere:
        bad(
            "access.admin_cidrs",
            anywhere,
            "opens SSH to the whole internet; set access.allow_ssh_from_anywhere: true to mean it",
        )
    if anywhere in cfg.access.monitoring_cidrs:
        bad(
            "access.monitoring_cidrs",
            anywhere,
            "opens the metrics to the whole internet; name the CIDR of your Prometheus",
        )
    problems.extend(_kubernetes_problems(cfg))
    return problems


def _kubernetes_problems(cfg: ClusterConfig) -> list[str]:
    """Flags kube-apiserver does not know or that the product sets itself; subnets that would collide."""
    k = cfg.kubernetes
    problems = []
    for flag, value in k.apiserver_args.items():
        allowed = kube.apiserver_arg_problem(flag, value)
        if allowed:
            problems.append(f"kubernetes.apiserver_args.{flag}: {value!r} — {allowed}")
    conflict = kube.apiserver_args_conflict(k.apiserver_args)
    if conflict:
        problems.append(
            f"kubernetes.apiserver_args: {kube.ANONYMOUS_AUTH} and {kube.AUTHENTICATION_CONFIG} — {conflict}"
        )
    subnet = cfg.network.subnet.cidr
    for field, cidr in (("pod_subnet", k.pod_subnet), ("service_subnet", k.service_subnet)):
        if cidr.overlaps(subnet):
            problems.append(
                f"kubernetes.{field}: {cidr} — overlaps network.subnet.cidr {subnet}: pods and services need "
                "addresses of their own; choose a range outside the tenant subnet"
            )
    if k.pod_subnet.overlaps(k.service_subnet):
        problems.append(
            f"kubernetes.pod_subnet: {k.pod_subnet} — overlaps kubernetes.service_subnet {k.service_subnet}; "
            "the two ranges must be disjoint"
        )
    return problems


def _state_problems(state: State) -> list[str]:
    """The backend's fields must fit together; the endpoint is https unless the config says otherwise."""
    if state.backend == "local":
        given = [f for f in ("bucket", "key", "region", "endpoint") if getattr(state, f) is not None]
        return [
            f"state.{f}: {getattr(state, f)} — only used with state.backend: s3; set that or remove this key"
            for f in given
        ]
    problems = [
        f"state.{f}: missing — required with state.backend: s3"
        for f in ("bucket", "region")
        if getattr(state, f) is None
    ]
    if state.endpoint is not None:
        url = urlsplit(state.endpoint)
        if url.username is not None or url.password is not None:
            problems.append(
                "state.endpoint: (value hidden) — credentials never go in the endpoint URL; "
                "they come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
            )
        elif url.scheme not in ("https", "http") or not url.hostname or url.query or url.fragment:
            problems.append(
                f"state.endpoint: {state.endpoint} — an https URL with a host and optional port, such as https://object.example.org:8080"
            )
        elif url.scheme == "http" and not state.allow_insecure_endpoint:
            problems.append(
                f"state.endpoint: {state.endpoint} — must be https: the state holds every node's userdata; "
                "set state.allow_insecure_endpoint: true to mean plain http"
            )
    return problems


def cross_cluster_problems(configs: list[ClusterConfig]) -> list[str]:
    """Clusters synthesized together must not share a name, a state object, nor on one network a VRID
    (VRRP clash), a VIP or a node address."""
    problems = []
    by_name: dict[str, int] = {}
    by_segment: dict[tuple[str, int], str] = {}
    for cfg in configs:
        if cfg.name in by_name:
            problems.append(f"name: {cfg.name} — two configs name the same cluster; names must be unique")
        by_name[cfg.name] = 1
        vrid = derive.vrid(cfg.name, cfg.vip.virtual_router_id)
        key = (cfg.network.identity, vrid)
        if key in by_segment:
            problems.append(
                f"vip.virtual_router_id: {vrid} — cluster {cfg.name} and cluster "
                f"{by_segment[key]} share network {cfg.network.identity.split(':', 1)[1]} and this VRID; "
                "set a distinct vip.virtual_router_id (1-255) on one of them"
            )
        by_segment.setdefault(key, cfg.name)
    problems.extend(_address_collisions(configs))
    problems.extend(_state_collisions(configs))
    return problems


def _address_collisions(configs: list[ClusterConfig]) -> list[str]:
    """On one network, a VIP or a member address used by two clusters: Neutron gives it to one port only."""
    problems = []
    owner: dict[tuple[str, ipaddress.IPv4Address], tuple[str, str]] = {}
    for cfg in configs:
        used = [("vip.address", cfg.vip.address)]
        used += [(f"nodes.members[{i}].address", m.address) for i, m in enumerate(cfg.nodes.members or ()) if m.address]
        for field, address in used:
            key = (cfg.network.identity, address)
            if key in owner and owner[key][0] != cfg.name:
                other, other_field = owner[key]
                problems.append(
                    f"{field}: {address} — cluster {cfg.name} and cluster {other} ({other_field}) both use this "
                    f"address on network {cfg.network.identity.split(':', 1)[1]}; each address belongs to one cluster"
                )
            owner.setdefault(key, (cfg.name, field))
    return problems


def _state_collisions(configs: list[ClusterConfig]) -> list[str]:
    """Two clusters writing one state object would overwrite each other's resources."""
    problems = []
    by_location: dict[tuple[str, str, str], str] = {}
    for cfg in configs:
        if cfg.state.backend != "s3" or cfg.state.bucket is None:
            continue
        location = ((cfg.state.endpoint or "aws").rstrip("/").lower(), cfg.state.bucket, cfg.state_key)
        if location in by_location:
            problems.append(
                f"state.key: {cfg.state_key} — cluster {cfg.name} and cluster {by_location[location]} would share "
                f"this state object in bucket {cfg.state.bucket}; give each cluster its own state.key"
            )
        by_location.setdefault(location, cfg.name)
    return problems


# ---------------------------------------------------------------------------------------------
# Loading


_SECRET_KEY = re.compile(r"pass|secret|token|auth|credential|_key$", re.IGNORECASE)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: Any = ClusterConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return ""
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
                    break
            else:
                continue
            break
        else:
            return ""
    return ", ".join(model.model_fields)


def _format_error(err: ErrorDetails) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = _loc(loc)
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        if _SECRET_KEY.search(key) and loc[0] == "state":
            return (
                f"{field}: (value hidden) — secrets never go in this file; the state backend reads "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE from the environment "
                "(for OpenStack: `openstack ec2 credentials create`); remove this key"
            )
        if _SECRET_KEY.search(key):
            return (
                f"{field}: (value hidden) — secrets never go in this file; VRRP runs as version 3, "
                "which has no password (keepalived would also cut a VRRPv2 auth_pass to 8 characters), "
                "and OpenStack credentials come from OS_CLOUD / clouds.yaml; remove this key"
            )
        return f"{field}: unknown key — allowed keys here: {_allowed_keys(loc)}"
    if err["type"] == "missing":
        return f"{field}: missing — this field is required"
    message = _allowed(err, loc)
    if isinstance(value, (dict, list)):
        # A check of a whole section (a model validator), or a message that shows the value itself.
        if " — " in message or (err["type"] == "value_error" and _allowed_keys((*loc, "?"))):
            return f"{field}: {message}"
        return f"{field}: {'a mapping' if isinstance(value, dict) else 'a list'} — {message}"
    return f"{field}: {'null' if value is None else repr(value)} — {message}"


# What each pattern in the model allows, in words (pydantic would print the regex).
_PATTERNS = {
    DNS_LABEL: "a DNS label: lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, "
    f"at most {DNS_LABEL_MAX} characters",
    INTERFACE: "an interface name: 1-15 letters, digits, '_', '.' or '-'",
    REGION: "a region name: 1-64 letters, digits, '.', '_' or '-'",
    DNS_DOMAIN: "a DNS domain such as cluster.local: dot-separated labels of lowercase letters, digits and '-'",
}


def _allowed(err: ErrorDetails, loc: tuple[Any, ...]) -> str:
    """What the field allows, in our words: pydantic's own messages name its types, not the config's."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        allowed = _PATTERNS.get(str(ctx.get("pattern")), "not allowed here")
        value = err.get("input")
        if ctx.get("pattern") == DNS_LABEL and isinstance(value, str) and len(value) > DNS_LABEL_MAX:
            allowed += f"; this one has {len(value)}"
        return allowed
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("string_type", "str_type"):
        return "must be text (quote it if YAML reads it as a number, a date or a boolean)"
    if kind.startswith("int_"):
        return "must be a whole number, unquoted"
    if kind.startswith("bool_"):
        return "must be true or false, unquoted"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return "must be a list (- item lines, or [a, b])"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = _allowed_keys((*loc, "?"))
        return f"must be a mapping with the keys {keys}" if keys else "must be a mapping of keys to values"
    if kind == "literal_error":
        return f"allowed: {ctx.get('expected')}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    return "not accepted here; see config/example.yaml for this field's form"


def parse_config(data: Any, source: str = "") -> ClusterConfig:
    """Validate already-parsed YAML data; raises ConfigError listing every problem."""
    if data is None:
        raise ConfigError(["the file is empty; start from config/example.yaml"], source)
    if not isinstance(data, dict):
        raise ConfigError(
            [f"(top level): {type(data).__name__} — the file must be a mapping of keys to values"], source
        )
    try:
        cfg = ClusterConfig.model_validate(data)
    except ValidationError as err:
        problems = [_format_error(e) for e in err.errors()]
        raise ConfigError(problems + _problems_beside(data, err), source) from None
    problems = _semantic_problems(cfg) + _state_problems(cfg.state)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _problems_beside(data: dict[str, Any], err: ValidationError) -> list[str]:
    """The cross-field problems a field error would otherwise hide: every field in error that has a
    default is taken out and the rest checked again. A problem that names a field taken out is left
    out (it would speak of the default, not of the file)."""
    data = copy.deepcopy(data)
    removed: list[str] = []
    for e in err.errors():
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        parent: Any = data
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                return []
        if not isinstance(parent, dict) or loc[-1] not in parent or not _has_default(loc):
            return []
        del parent[loc[-1]]
        removed.append(_loc(tuple(loc)))
    try:
        cfg = ClusterConfig.model_validate(data)
    except ValidationError:
        return []
    found = _semantic_problems(cfg) + _state_problems(cfg.state)
    return [p for p in found if not any(r in p for r in removed)]


def _has_default(loc: list[Any]) -> bool:
    """Whether the field at `loc` (a path of keys through the model) may be left out."""
    model: Any = ClusterConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return False
        model = field.annotation
    field = model.model_fields.get(loc[-1]) if isinstance(loc[-1], str) else None
    return field is not None and not field.is_required()


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise _DuplicateKey(
                        f"line {line}: key {key!r} repeats the one at line {first[key]} of the same mapping — "
                        "YAML would silently keep only the last; give each key once"
                    )
                first[key] = line
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                pass
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            [f"CONFIG: {str(path)!r} — no such file; point CONFIG at a cluster YAML such as config/example.yaml"]
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as err:
        raise ConfigError([str(err)], str(path)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([f"YAML does not parse at {where}: {problem}"], str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError([f"the file is not UTF-8 text ({err.reason})"], str(path)) from None
    return parse_config(data, str(path))


def load_configs(spec: str | None) -> list[ClusterConfig]:
    """Load the clusters named by CONFIG: one path, or several separated by commas."""
    paths = [p.strip() for p in (spec or str(DEFAULT_CONFIG)).split(",") if p.strip()]
    if not paths:
        raise ConfigError([f"CONFIG: {spec!r} — name at least one cluster YAML file"])
    configs: list[ClusterConfig] = []
    problems: list[str] = []
    for p in paths:
        try:
            configs.append(load_config(p))
        except ConfigError as err:
            problems.extend(f"{err.source or p}: {line}" for line in err.problems)
    if problems:
        raise ConfigError(problems)
    cross = cross_cluster_problems(configs)
    if cross:
        raise ConfigError(cross)
    return configs
