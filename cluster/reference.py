"""The configuration reference in docs/configuration.md, generated from the model so it cannot drift.

Type, default and required come from the pydantic fields themselves; the rule column joins what the
field's constraints say with RULES, the words for what the validators and cross-field checks do.
`python -m cluster.reference --write` rewrites the table in docs/configuration.md; tests/test_docs.py
fails when the file and this module disagree.
"""

from __future__ import annotations

import ipaddress
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotated_types import Ge, Le, MinLen
from pydantic import AfterValidator, BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cluster import config
from cluster import kubernetes as kube
from cluster.config import ALLOWED_NODE_COUNTS, DNS_LABEL_MAX, NAME_MAX_WITHOUT_MEMBERS, ClusterConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
REGENERATE = "python -m cluster.reference --write"
BEGIN = f"<!-- BEGIN config_table: generated from cluster/config.py by `{REGENERATE}`; do not edit by hand -->"
END = "<!-- END config_table -->"

_ONLY_S3 = "only with `state.backend: s3`"

# What the validators and cross-field checks in cluster/config.py enforce, in words; the tests hold
# every key to a real field.
RULES: dict[str, str] = {
    "name": (
        f"at most {NAME_MAX_WITHOUT_MEMBERS} characters without `nodes.members` (the nodes are then named "
        f"`<name>-cp-<n>`, each a DNS label of at most {DNS_LABEL_MAX}); names the stack and its state and "
        "seeds the VRRP router id; unique among clusters synthesized together"
    ),
    "network": "the existing network the nodes and the VIP live on",
    "network.name": "exactly one of `network.name`, `network.id`",
    "network.id": "exactly one of `network.name`, `network.id`",
    "network.subnet": "the existing subnet of that network",
    "network.subnet.name": "exactly one of `network.subnet.name`, `network.subnet.id`",
    "network.subnet.id": "exactly one of `network.subnet.name`, `network.subnet.id`",
    "network.subnet.cidr": "a /29 or larger; a plan against a subnet whose CIDR differs is refused",
    "network.subnet.gateway": (
        "a host address inside `network.subnet.cidr`; absent: the subnet's first address; the nodes' "
        "network check pings it, so it must answer ping (the survivor rule)"
    ),
    "network.interface": "the nodes' interface on this network, as the image names it (keepalived binds the VIP there)",
    "vip.address": (
        "inside `network.subnet.cidr`, not its network, broadcast or gateway address, no member's address; "
        "not used by another cluster on the same network"
    ),
    "vip.floating_ip_pool": (
        "a floating IP from this pool on the VIP port; needs a router from the subnet to the pool's network"
    ),
    "vip.virtual_router_id": "absent: derived from `name`; distinct from every other cluster's on the same network",
    "nodes.count": (
        f"one of {', '.join(map(str, ALLOWED_NODE_COUNTS))} (stacked etcd needs an odd count; 1 is not highly "
        "available; etcd advises against more than 7)"
    ),
    "nodes.image": "a change applies only to nodes created later (moved one at a time)",
    "nodes.flavor": "a change applies only to nodes created later (moved one at a time)",
    "nodes.key_pair": "a change applies only to nodes created later (moved one at a time)",
    "nodes.anti_affinity": "the server group's policy; with `soft` the VMs are created one after another",
    "nodes.extra_security_groups": "added to every node port (your CNI and worker rules); each once",
    "nodes.members": (
        "exactly `nodes.count` entries, every one with an address or none; absent: the nodes are "
        "`<name>-cp-1` ... with Neutron-allocated addresses"
    ),
    "nodes.members[].name": "unique",
    "nodes.members[].address": (
        "inside `network.subnet.cidr`, not its network, broadcast or gateway address, not `vip.address`; "
        "unique, also across clusters on the same network"
    ),
    "access.client_cidrs": (
        "at least one; who may reach the VIP's `ports.frontend`: include the workers' addresses, bastions "
        "and CI; each once; `0.0.0.0/0` only with `access.allow_api_from_anywhere: true`"
    ),
    "access.admin_cidrs": (
        "who may SSH to the nodes; each once; `0.0.0.0/0` only with `access.allow_ssh_from_anywhere: true`"
    ),
    "access.monitoring_cidrs": "who may scrape `ports.metrics` on each node; each once; never `0.0.0.0/0`",
    "access.allow_api_from_anywhere": "lets `access.client_cidrs` hold `0.0.0.0/0`",
    "access.allow_ssh_from_anywhere": "lets `access.admin_cidrs` hold `0.0.0.0/0`",
    "ports.frontend": "haproxy's port on the VIP, kubeadm's endpoint port; differs from `ports.apiserver`",
    "ports.apiserver": "kube-apiserver's port on every node",
    "ports.health": "the keepalived check's port on 127.0.0.1; differs from `ports.frontend` and `ports.apiserver`",
    "ports.metrics": (
        "haproxy's Prometheus exporter and keepalived's state on each node's address; differs from the other ports"
    ),
    "containers.haproxy": "pinned: `repository:tag` with a tag other than `latest`, or `repository@sha256:<64 hex>`",
    "containers.keepalived": "pinned: `repository:tag` with a tag other than `latest`, or `repository@sha256:<64 hex>`",
    "kubernetes": "what each node's kubeadm configuration says (`make kubeadm-config NODE=...` prints it)",
    "kubernetes.version": (
        f"a Kubernetes release `v{kube.KUBERNETES_VERSION.rsplit('.', 1)[0]}.0` to `v{kube.KUBERNETES_VERSION}`, "
        "with or without the `v`: the release whose kubeadm validates these files"
    ),
    "kubernetes.pod_subnet": (
        "kubeadm's `networking.podSubnet`; outside `network.subnet.cidr` and `kubernetes.service_subnet`"
    ),
    "kubernetes.service_subnet": "kubeadm's `networking.serviceSubnet`; outside `network.subnet.cidr`",
    "kubernetes.dns_domain": "kubeadm's `networking.dnsDomain`",
    "kubernetes.apiserver_args": (
        f"kube-apiserver flag (no leading `--`) to a quoted value, for kubeadm's `apiServer.extraArgs`; flags of "
        f"kube-apiserver v{kube.KUBERNETES_VERSION} only; not {', '.join(f'`{f}`' for f in sorted(kube.OWNED_FLAGS))} "
        f"(the product sets them); `{kube.SHUTDOWN_DELAY}` defaults to the recommended delay; "
        '`anonymous-auth: "false"` '
        "keeps anonymous access to the health endpoints only, through an authentication configuration "
        "(not together with `authentication-config`)"
    ),
    "state": "where Terraform keeps this cluster's state; its credentials come from the environment only",
    "state.bucket": f"{_ONLY_S3}; an S3 bucket name that {'; '.join(rule for _, rule in config._BUCKET_RULES)}",
    "state.key": (
        f"{_ONLY_S3}; absent: `<name>/terraform.tfstate`; no leading or trailing `/`, no `//`; "
        "distinct from every other cluster's in the same bucket"
    ),
    "state.region": f"{_ONLY_S3}; the region name the store signs requests with",
    "state.endpoint": f"{_ONLY_S3}; an S3-compatible store's https URL with no credentials in it; absent: AWS S3",
    "state.use_path_style": "`https://host/bucket/key` addressing",
    "state.encrypt": "asks the store for server-side encryption",
    "state.use_lockfile": "Terraform writes `<key>.tflock` beside the state while it works",
    "state.allow_insecure_endpoint": "lets `state.endpoint` be plain http",
    "allow_destroy": (
        "`true` only for the applies that mean it (a teardown, replacing one node, adding or removing "
        "nodes or the floating IP); then back to `false`"
    ),
}

# Fields that are optional in the model but required by a cross-field check.
REQUIRED_WHEN: dict[str, str] = {
    "network.name": "`name` or `id`",
    "network.id": "`name` or `id`",
    "network.subnet.name": "`name` or `id`",
    "network.subnet.id": "`name` or `id`",
    "state.bucket": "with `backend: s3`",
    "state.region": "with `backend: s3`",
}

_SCALARS = {
    bool: "boolean",
    int: "integer",
    str: "text",
    ipaddress.IPv4Address: "IPv4 address",
    ipaddress.IPv4Network: "IPv4 CIDR",
}


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    default: str
    required: str
    rule: str


def _constraints(meta: list[Any]) -> list[str]:
    """What the field's own constraints allow, in the words the error messages use."""
    words: list[str] = []
    low = high = None
    for item in meta:
        if isinstance(item, FieldInfo):
            words += _constraints(list(item.metadata))
        elif isinstance(item, Ge):
            low = item.ge
        elif isinstance(item, Le):
            high = item.le
        elif isinstance(item, MinLen) and item.min_length == 1:
            words.append("not empty")
        elif getattr(item, "pattern", None):
            words.append(config._PATTERNS[item.pattern])
        elif isinstance(item, AfterValidator) and item.func is config._no_template:
            words.append("no `${` or `%{`")
        elif isinstance(item, BeforeValidator) and item.func is config._strict_network:
            words.append("written exactly, no host bits")
    if low is not None or high is not None:
        words.append(f"{low}-{high}")
    return words


def _describe(annotation: Any, meta: list[Any]) -> tuple[str, list[str]]:
    """(type in words, constraint words) for one annotation and its metadata."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _describe(base, [*meta, *extra])
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _describe(kinds[0], meta)
    if origin is tuple:
        kind, words = _describe(typing.get_args(annotation)[0], [])
        each = [f"each entry {', '.join(words)}"] if words else []
        return f"list of {kind}s", each + _constraints(meta)
    if origin is dict:
        kind, words = _describe(typing.get_args(annotation)[1], [])
        return f"mapping of texts to {kind}s", _constraints(meta)
    if origin is typing.Literal:
        return " \\| ".join(f"`{v}`" for v in typing.get_args(annotation)), _constraints(meta)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping", _constraints(meta)
    return _SCALARS[annotation], _constraints(meta)


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is PydanticUndefined or value is None:
        return "-"
    if isinstance(value, BaseModel):
        return "each field's default"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == ():
        return "`[]`"
    if value == {}:
        return "`{}`"
    return f"`{value}`"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _model_of(arg)
        if model is not None:
            return model
    return None


def rows(model: type[BaseModel] = ClusterConfig, prefix: str = "") -> Iterator[Row]:
    """Every field of the config, depth first, in the model's order."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        kind, words = _describe(field.annotation, list(field.metadata))
        nested = _model_of(field.annotation)
        if nested is not None and kind.startswith("list of"):
            kind = "list of mappings"
        rule = "; ".join([*words, RULES[path]] if path in RULES else words)
        required = "yes" if field.is_required() else REQUIRED_WHEN.get(path, "no")
        yield Row(path, kind, _default(field), required, rule)
        if nested is not None:
            yield from rows(nested, f"{path}[]." if kind == "list of mappings" else f"{path}.")


def config_table() -> str:
    """The Markdown table of every config field: dotted path, type, default, required, rule."""
    lines = ["| field | type | default | required | rule |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{r.path}` | {r.type} | {r.default} | {r.required} | {r.rule} |" for r in rows()]
    return "\n".join(lines) + "\n"


def documented_table(text: str) -> str | None:
    """The table between the markers of docs/configuration.md, or None when the markers are missing."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(doc: Path = DOC) -> None:
    text = doc.read_text(encoding="utf-8")
    if documented_table(text) is None:
        raise SystemExit(f"error: {doc}: no table markers; put {BEGIN!r} and {END!r} where the table goes")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{BEGIN}\n{config_table()}{END}{tail}", encoding="utf-8")


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        write()
        print(f"wrote the config table in {DOC}")
    elif not argv:
        sys.stdout.write(config_table())
    else:
        print("usage: python -m cluster.reference [--write]  (print the table, or rewrite it)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
