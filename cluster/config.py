"""The only place raw input is trusted: one YAML file per cluster becomes a frozen, validated model.

Every problem found is reported as one line that names the field, shows the value and says what
is allowed; nothing downstream ever sees an invalid config.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "example.yaml"

# Stacked etcd lives on these nodes: an odd count keeps quorum meaningful (an even count adds a
# member without adding fault tolerance), one node is no HA, and etcd advises against more than 7.
ALLOWED_NODE_COUNTS = (3, 5, 7)

DNS_LABEL = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
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
    if not isinstance(value, str):
        return value
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as err:
        try:
            loose = ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            raise ValueError(f"not an IPv4 CIDR ({err})") from None
        raise ValueError(f"host bits are set; did you mean {loose}?") from None


# A network written exactly (no host bits), so a typo is never silently widened or narrowed.
Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_strict_network)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Ref(_Model):
    """An existing OpenStack object, named by exactly one of name or id."""

    name: str | None = None
    id: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Ref:
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of 'name' or 'id'")
        return self


class Subnet(Ref):
    cidr: Cidr
    gateway: ipaddress.IPv4Address | None = None


class Network(Ref):
    subnet: Subnet
    # The nodes' interface on this network, as the image names it (keepalived binds the VIP there).
    interface: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]{1,15}$")] = "ens3"

    @property
    def identity(self) -> str:
        return f"id:{self.id}" if self.id else f"name:{self.name}"


class Vip(_Model):
    address: ipaddress.IPv4Address
    floating_ip_pool: str | None = None
    virtual_router_id: Annotated[int, Field(ge=1, le=255)] | None = None


class Member(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL)]
    address: ipaddress.IPv4Address | None = None


class Nodes(_Model):
    count: int = 3
    image: str
    flavor: str
    key_pair: str
    anti_affinity: Literal["hard", "soft"] = "hard"
    extra_security_groups: tuple[str, ...] = ()
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
    allow_api_from_anywhere: bool = False
    allow_ssh_from_anywhere: bool = False

    @field_validator("client_cidrs")
    @classmethod
    def _some_clients(cls, value: tuple[ipaddress.IPv4Network, ...]) -> tuple[ipaddress.IPv4Network, ...]:
        if not value:
            raise ValueError("empty — name at least one CIDR that may reach the API (workers, bastions, CI)")
        return value


Port = Annotated[int, Field(ge=1, le=65535)]


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
            raise ValueError("pin the image with a version tag or, better, a digest (@sha256:...); 'latest' or no tag is not allowed")
        return value


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
    region: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = None
    # An S3-compatible store (Swift s3api, Ceph RGW, MinIO...); absent means AWS S3 itself.
    endpoint: str | None = None
    use_path_style: bool = False
    encrypt: bool = True
    use_lockfile: bool = True
    allow_insecure_endpoint: bool = False

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
            raise ValueError("an object path such as clusters/demo/terraform.tfstate: not empty, no leading or trailing '/', no '//'")
        return value


class ClusterConfig(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL)]
    network: Network
    vip: Vip
    nodes: Nodes
    access: Access
    ports: Ports = Ports()
    containers: Containers
    state: State = State()

    @property
    def state_key(self) -> str:
        """The object holding this cluster's state in its bucket."""
        return self.state.key or f"{self.name}/terraform.tfstate"

    @property
    def virtual_router_id(self) -> int:
        """The configured VRID, else one derived from the cluster name (stable across synths)."""
        if self.vip.virtual_router_id is not None:
            return self.vip.virtual_router_id
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "big") % 255 + 1

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.network.subnet.gateway or next(self.network.subnet.cidr.hosts())

    def member_list(self) -> tuple[Member, ...]:
        """Members as configured, or named `<cluster>-cp-<n>` with Neutron-allocated addresses."""
        if self.nodes.members is not None:
            return self.nodes.members
        return tuple(Member(name=f"{self.name}-cp-{i}") for i in range(1, self.nodes.count + 1))


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
    reserved[cfg.gateway] = "the subnet's gateway"

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
    if members is not None:
        if len(members) != cfg.nodes.count:
            bad("nodes.members", f"{len(members)} members", f"must list exactly nodes.count = {cfg.nodes.count} members")
        seen_names: dict[str, int] = {}
        seen_addresses: dict[ipaddress.IPv4Address, int] = {}
        with_address = [m.address is not None for m in members]
        if any(with_address) and not all(with_address):
            bad("nodes.members", "some members without address", "give every member an address, or none (Neutron allocates)")
        for i, member in enumerate(members):
            field = f"nodes.members[{i}]"
            if member.name in seen_names:
                bad(f"{field}.name", member.name, f"duplicate of nodes.members[{seen_names[member.name]}].name; names must be unique")
            seen_names.setdefault(member.name, i)
            if member.address is None:
                continue
            if member.address == cfg.vip.address:
                bad(f"{field}.address", member.address, "equals vip.address; the VIP needs its own address")
            elif check_host(f"{field}.address", member.address) and member.address in seen_addresses:
                bad(f"{field}.address", member.address, f"duplicate of nodes.members[{seen_addresses[member.address]}].address")
            seen_addresses.setdefault(member.address, i)

    ports = cfg.ports
    if ports.frontend == ports.apiserver:
        bad("ports.frontend", ports.frontend, f"must differ from ports.apiserver ({ports.apiserver}): haproxy and kube-apiserver share each node")
    if ports.health in (ports.frontend, ports.apiserver):
        bad("ports.health", ports.health, "must differ from ports.frontend and ports.apiserver")
    if ports.metrics in (ports.frontend, ports.apiserver, ports.health):
        bad("ports.metrics", ports.metrics, "must differ from ports.frontend, ports.apiserver and ports.health")

    anywhere = ipaddress.IPv4Network("0.0.0.0/0")
    if anywhere in cfg.access.client_cidrs and not cfg.access.allow_api_from_anywhere:
        bad("access.client_cidrs", anywhere, "opens the API to the whole internet; set access.allow_api_from_anywhere: true to mean it")
    if anywhere in cfg.access.admin_cidrs and not cfg.access.allow_ssh_from_anywhere:
        bad("access.admin_cidrs", anywhere, "opens SSH to the whole internet; set access.allow_ssh_from_anywhere: true to mean it")
    if anywhere in cfg.access.monitoring_cidrs:
        bad("access.monitoring_cidrs", anywhere, "opens the metrics to the whole internet; name the CIDR of your Prometheus")
    return problems


def _state_problems(state: State) -> list[str]:
    """The backend's fields must fit together; the endpoint is https unless the config says otherwise."""
    if state.backend == "local":
        given = [f for f in ("bucket", "key", "region", "endpoint") if getattr(state, f) is not None]
        return [f"state.{f}: {getattr(state, f)} — only used with state.backend: s3; set that or remove this key" for f in given]
    problems = [
        f"state.{f}: missing — required with state.backend: s3" for f in ("bucket", "region") if getattr(state, f) is None
    ]
    if state.endpoint is not None:
        url = urlsplit(state.endpoint)
        if url.username is not None or url.password is not None:
            problems.append(
                "state.endpoint: (value hidden) — credentials never go in the endpoint URL; "
                "they come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
            )
        elif url.scheme not in ("https", "http") or not url.hostname or url.query or url.fragment:
            problems.append(f"state.endpoint: {state.endpoint} — an https URL with a host and optional port, such as https://object.example.org:8080")
        elif url.scheme == "http" and not state.allow_insecure_endpoint:
            problems.append(
                f"state.endpoint: {state.endpoint} — must be https: the state holds every node's userdata; "
                "set state.allow_insecure_endpoint: true to mean plain http"
            )
    return problems


def cross_cluster_problems(configs: list[ClusterConfig]) -> list[str]:
    """Clusters synthesized together must not share a name, nor a VRID on one network (VRRP clash)."""
    problems = []
    by_name: dict[str, int] = {}
    by_segment: dict[tuple[str, int], str] = {}
    for cfg in configs:
        if cfg.name in by_name:
            problems.append(f"name: {cfg.name} — two configs name the same cluster; names must be unique")
        by_name[cfg.name] = 1
        key = (cfg.network.identity, cfg.virtual_router_id)
        if key in by_segment:
            problems.append(
                f"vip.virtual_router_id: {cfg.virtual_router_id} — cluster {cfg.name} and cluster "
                f"{by_segment[key]} share network {cfg.network.identity.split(':', 1)[1]} and this VRID; "
                "set a distinct vip.virtual_router_id (1-255) on one of them"
            )
        by_segment.setdefault(key, cfg.name)
    problems.extend(_state_collisions(configs))
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


def _format_error(err: dict[str, Any]) -> str:
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
    message = err["msg"].removeprefix("Value error, ")
    if isinstance(value, (dict, list)):
        return f"{field}: {message}"
    return f"{field}: {value!r} — {message}"


def parse_config(data: Any, source: str = "") -> ClusterConfig:
    """Validate already-parsed YAML data; raises ConfigError listing every problem."""
    if data is None:
        raise ConfigError(["the file is empty; start from config/example.yaml"], source)
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): {type(data).__name__} — the file must be a mapping of keys to values"], source)
    try:
        cfg = ClusterConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError([_format_error(e) for e in err.errors()], source) from None
    problems = _semantic_problems(cfg) + _state_problems(cfg.state)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"CONFIG: {str(path)!r} — no such file; point CONFIG at a cluster YAML such as config/example.yaml"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
