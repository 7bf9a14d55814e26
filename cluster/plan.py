"""Pure decisions about the HA control plane: names, addresses, priorities, peers, timings.

No cdktf here, so every decision can be tested (and property-tested) without synthesizing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from cluster import derive
from cluster import kubernetes as kube

if TYPE_CHECKING:  # the plan's constants are read where pydantic is not worth importing (the lab's apiserver)
    from cluster.config import ClusterConfig

# Highest VRRP priority; each further node is one step lower. All distinct, all below 255
# (255 is reserved for the address owner) and far above 0 (0 means "releasing the VIP"). Near the
# top because a backup answers a master's priority-0 advert (a failed check) after the VRRPv3 skew
# time, (256 - priority) x advert_int / 256: 0.8 ms at 254, 45 ms at 140. The step keeps the skews
# of two backups 4 ms apart, so the higher one's advert reaches the other before it acts.
PRIORITY_TOP = 254
PRIORITY_STEP = 10

# VRRPv3 adverts every 100 ms: a dead or cut-off holder is replaced after 3 missed adverts plus
# skew (~0.3 s). VRRPv3 carries no password; the security group admits VRRP only from
# members and Neutron port security stops members from spoofing one another.
VRRP_VERSION = 3
ADVERT_INTERVAL = 0.1
MISSED_ADVERTS = 3  # RFC 5798's Master_Down_Interval: 3 x advert_int + skew
# A new master sends gratuitous ARPs for the VIP at once and again GARP_MASTER_DELAY_S later; then
# every GARP_MASTER_REFRESH_S for as long as it is master: after a partition heals, the node that
# keeps the VIP may never change state, and clients and OVN would go on using the stale owner.
GARP_MASTER_DELAY_S = 1
GARP_MASTER_REFRESH_S = 1

# keepalived 2.2 runs a check script at most once a second. haproxy holds each request to its
# health endpoint for CHECK_HOLD_MS before it answers, and one run of the script makes
# CHECK_HOLDS such requests in a row, so together they watch haproxy for almost the whole second:
# haproxy's death closes the open one, and the check fails at once instead of at the next poll.
# A graceful stop (docker stop: SIGUSR1) lets the open request finish but refuses the next one, so
# it is seen within CHECK_HOLD_MS. The weight 0 puts a failing node in FAULT: it releases the VIP
# and ranks below every healthy node whatever the priorities are.
CHECK_INTERVAL_S = 1
CHECK_TIMEOUT_S = 3
CHECK_HOLD_MS = 220
CHECK_HOLDS = 4  # 4 x 220 ms, below the interval: a run still going when the next is due skips that one
CHECK_MAX_TIME = 0.6  # seconds per request: a hung haproxy never answers
CHECK_WEIGHT = 0
CHECK_FALL = 1  # one failed run is enough: the run itself already watched for most of a second
CHECK_RISE = 1
# After a failed run, the next one is a recovery: it asks every CHECK_RECOVER_POLL_S, CHECK_RECOVER_POLLS
# times, with a request that haproxy answers at once, so a node in FAULT leaves it as soon as its
# haproxy serves again instead of up to a second later. The mark lives in the keepalived
# container's /tmp (the script runs as script_user, which may write nowhere else).
CHECK_RECOVER_POLL_S = 0.1
CHECK_RECOVER_POLLS = 8
CHECK_FAILED_MARK = "/tmp/kubeadm-ha-check-haproxy.failed"

# Cut off or survivor: every second the node pings its peers and the subnet gateway and fails
# when none answers (twice in a row). A node that reaches nothing goes to FAULT, so it holds no
# VIP in its island and cannot win the VIP back when the partition heals; one that still reaches
# the gateway is the survivor and keeps the VIP. ping needs a raw socket: the script runs as root.
# One run sends a round of pings every REACH_RETRY_S for REACH_ROUNDS rounds and succeeds at the
# first answer: a node in FAULT sees its network come back within about REACH_RETRY_S of the
# first answer (not at the next run, up to a second later), and a healthy node's run ends at once.
# ARP asks again every NEIGH_RETRANS_MS (Linux: every second) for a neighbour that has not answered.
# After a partition heals, a node's first pings find the peer's entry still unresolved and wait
# for the next ARP request: with the default, up to a second. Set at every boot (cloud-init
# bootcmd) on the VIP's interface; costs a few more ARP requests while a neighbour is away.
NEIGH_RETRANS_MS = 100
REACH_INTERVAL_S = 1
REACH_TIMEOUT_S = 3
REACH_WAIT_S = 1  # ping -W takes whole seconds in busybox (the osixia image's ping) ...
REACH_RETRY_S = 0.2  # ... so the script stops waiting itself, before the next run is due:
REACH_ROUNDS = 4  # REACH_ROUNDS x REACH_RETRY_S = 0.8 s, below the 1 s interval
REACH_DEADLINE_S = round(REACH_RETRY_S * REACH_ROUNDS, 3)
REACH_FALL = 2
REACH_RISE = 1
REACH_WEIGHT = 0  # FAULT whatever the priorities

# haproxy's HTTPS check of each apiserver. /readyz, not the /healthz of kubeadm's recipe: on SIGTERM
# (kubelet stopping the static pod, an upgrade, a certificate renewal) kube-apiserver fails /readyz
# at once and keeps serving for --shutdown-delay-duration, so that load balancers stop sending it
# new connections before it goes; /healthz stays ok until the process stops. Both fail while the
# apiserver cannot work (etcd unreachable), and both are readable without credentials.
APISERVER_CHECK_URI = "/readyz"
# haproxy checks every apiserver every APISERVER_CHECK_INTER_MS; once one check fails (or passes
# after a failure) every APISERVER_CHECK_FASTINTER_MS until APISERVER_CHECK_FALL (or _RISE) in a row
# decide: an unhealthy apiserver is out 0.1-0.35 s after it starts failing, at the cost of 4 TLS
# handshakes a second from each haproxy to each apiserver. A check may take
# APISERVER_CHECK_TIMEOUT_S to answer. A connection error on live traffic marks the server down at
# once (observe layer4, error-limit 1). `shutdown_delay_s` turns these into the apiserver's
# --shutdown-delay-duration.
APISERVER_CHECK_INTER_MS = 250
APISERVER_CHECK_FASTINTER_MS = 100
APISERVER_CHECK_FALL = 2
APISERVER_CHECK_RISE = 2
APISERVER_CHECK_TIMEOUT_S = 1
APISERVER_ERROR_LIMIT = 1
# A node cut off the network must not hold a client: haproxy gives up connecting after
# CONNECT_TIMEOUT_MS and tries again (CONNECT_RETRIES times), on another server (redispatch).
CONNECT_TIMEOUT_MS = 500
CONNECT_RETRIES = 3
# kubectl logs -f / exec / watch streams stay open for hours; TCP keepalives find dead peers. A
# half-closed connection is dropped after FIN_TIMEOUT_S.
STREAM_TIMEOUT_H = 4
FIN_TIMEOUT_S = 10
# The health and metrics frontends answer at once: a client that sends nothing goes after this.
LOCAL_CLIENT_TIMEOUT_S = 5
# The apiserver's --shutdown-delay-duration that we recommend: haproxy's worst-case detection
# (`detection_worst_s`) plus about 2 s for a loaded node, rounded up to whole seconds.
SHUTDOWN_MARGIN_S = 2

HEALTH_URI = "/haproxy-ready"
# haproxy's view of every apiserver (CSV: append ";csv"), on the loopback health frontend only.
STATS_URI = "/stats"
# On the metrics frontend (each node's address): haproxy's own exporter and keepalived's state.
METRICS_URI = "/metrics"
KEEPALIVED_METRICS_URI = "/metrics/keepalived"

# haproxy needs about two descriptors per connection (client and server side) plus a few for
# listeners, checks and logs. The official image runs as non-root, so haproxy can raise its soft
# limit only up to the container's hard limit, which otherwise comes from the Docker daemon's
# defaults (they differ between distributions and Docker versions): the userdata sets it.
HAPROXY_MAXCONN = 20000
HAPROXY_FD_HEADROOM = 1000
HAPROXY_NOFILE = 65536

# First boot depends on the network: apt (only where the image has no Docker) and one pull per image.
# A mirror that hiccups or a registry's rate limit must not leave a node without haproxy or
# keepalived: each step is tried again, waiting BOOT_BACKOFF_FIRST_S, then twice as long each time up
# to BOOT_BACKOFF_MAX_S, for at most BOOT_RETRY_S (a rate limit's window is minutes; cloud-init waits
# for runcmd). A step that still fails writes BOOT_FAILED_MARK (what failed, its last error line),
# which `ops status` reports, and makes cloud-init's runcmd fail.
BOOT_RETRY_S = 600
BOOT_BACKOFF_FIRST_S = 5
BOOT_BACKOFF_MAX_S = 60
BOOT_FAILED_MARK = "/var/lib/kubeadm-ha/boot-failed"
# haproxy logs every connection to stdout (~150 bytes each), through Docker's json-file driver, on
# the disk etcd needs: a full disk stops etcd. Each container keeps at most CONTAINER_LOG_FILES files
# of CONTAINER_LOG_MAX_MB: 50 MB per container, about 300 000 connections of history, read with
# `docker logs`. The same for keepalived, whose log is small but must not grow without bound either.
CONTAINER_LOG_MAX_MB = 10
CONTAINER_LOG_FILES = 5


def _tunables() -> Mapping[str, int | float | str]:
    """Every timing, limit, path and URI above by its name, typed as decided (numbers as numbers):
    what the templates format, as `tunables.NAME`, and nothing else of this module."""
    return MappingProxyType(
        {
            name: value
            for name, value in globals().items()
            if name.isupper() and isinstance(value, int | float | str) and not isinstance(value, bool)
        }
    )


TUNABLES = _tunables()

# kubeadm's files on each node (written by cloud-init): the node's kubeadm configuration, the join
# helper that fills the join secrets in from the environment, and, for a hardened apiserver, the
# authentication configuration (in a folder of its own that kubeadm mounts into the apiserver's pod).
KUBEADM_DIR = "/etc/kubeadm-ha/kubeadm"
KUBEADM_CONFIG = f"{KUBEADM_DIR}/kubeadm.yaml"
KUBEADM_JOIN = f"{KUBEADM_DIR}/join.sh"
APISERVER_DIR = "/etc/kubeadm-ha/apiserver"
AUTHENTICATION_CONFIG = f"{APISERVER_DIR}/authentication-config.yaml"
# What stays readable without credentials on a hardened apiserver: the health endpoints kubelet's
# probes and haproxy's checks read, and the cluster-info ConfigMap that `kubeadm join` discovers the
# cluster by (its token-signed CA; the join's bootstrap token authenticates only after that).
CLUSTER_INFO_PATH = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
ANONYMOUS_PATHS = ("/healthz", "/livez", "/readyz", CLUSTER_INFO_PATH)
# The join secrets a joining node's kubeadm.yaml leaves for the join command (never in user_data):
# field of JoinConfiguration -> (placeholder in the file, the variable join.sh reads it from).
JOIN_SECRETS = {
    "token": ("@KUBEADM_TOKEN@", "KUBEADM_TOKEN"),
    "caCertHash": ("@KUBEADM_CA_CERT_HASH@", "KUBEADM_CA_CERT_HASH"),
    "certificateKey": ("@KUBEADM_CERTIFICATE_KEY@", "KUBEADM_CERTIFICATE_KEY"),
}


@dataclass(frozen=True)
class KubePlan:
    """What each node's kubeadm configuration says, decided once for the cluster."""

    version: str  # as kubeadm writes it: v1.37.2
    pod_subnet: str
    service_subnet: str
    dns_domain: str
    # kube-apiserver's flags in kubeadm's apiServer.extraArgs, sorted by name.
    apiserver_args: tuple[tuple[str, str], ...]
    # anonymous-auth "false" asked for: anonymous access stays for ANONYMOUS_PATHS only.
    health_only_anonymous: bool


def kube_plan(cfg: ClusterConfig) -> KubePlan:
    """The user's apiserver flags over ours (the recommended shutdown delay); a hardened
    apiserver's anonymous-auth "false" becomes an authentication configuration (kube-apiserver
    refuses the flag beside it) that keeps anonymous access to the health endpoints only."""
    k = cfg.kubernetes
    args = {kube.SHUTDOWN_DELAY: f"{shutdown_delay_s()}s", **k.apiserver_args}
    hardened = args.get(kube.ANONYMOUS_AUTH) == "false"
    if hardened:
        del args[kube.ANONYMOUS_AUTH]
        args[kube.AUTHENTICATION_CONFIG] = AUTHENTICATION_CONFIG
    return KubePlan(
        version=kube.supported_version(k.version),
        pod_subnet=str(k.pod_subnet),
        service_subnet=str(k.service_subnet),
        dns_domain=k.dns_domain,
        apiserver_args=tuple(sorted(args.items())),
        health_only_anonymous=hardened,
    )


@dataclass(frozen=True)
class NodePlan:
    name: str
    address: str | None  # None: Neutron allocates it, the construct supplies a reference
    priority: int


# What the nodes' security group admits, and from whom. VRRP is IP protocol 112 (Neutron takes the
# number), from the members only: VRRPv3 carries no password. For ICMP, Neutron's port range is
# (type, code): echo requests, for keepalived's network check.
VRRP_PROTOCOL = "112"
ICMP_ECHO_REQUEST = (8, 0)
ETCD_PORTS = (2379, 2380)
SSH_PORT = 22


@dataclass(frozen=True)
class SecurityRule:
    """One ingress rule of the control-plane security group, as Neutron takes it (IPv4)."""

    name: str  # stable, from what it admits: its Terraform address is rule_<name>
    protocol: str
    ports: tuple[int, int] | None  # (min, max); None: the protocol has no ports
    remote_prefix: str | None  # None: from the group's own members
    reason: str  # the rule's description in Neutron


def _cidr_id(cidr: object) -> str:
    return str(cidr).replace(".", "_").replace("/", "-")


def security_rules(cfg: ClusterConfig) -> tuple[SecurityRule, ...]:
    """Every rule the nodes' security group holds: between the members what VRRP, keepalived's
    network check, haproxy, the apiservers and stacked etcd need; from the configured CIDRs the API
    endpoint (clients), SSH (administrators) and the metrics port (monitoring). Nothing else."""
    ports = cfg.ports

    def one(port: int) -> tuple[int, int]:
        return (port, port)

    rules = [
        SecurityRule("vrrp_from_members", VRRP_PROTOCOL, None, None, "VRRP adverts between keepalived peers"),
        SecurityRule(
            "ping_from_members",
            "icmp",
            ICMP_ECHO_REQUEST,
            None,
            "keepalived's network check: a node no peer answers may be cut off",
        ),
        SecurityRule(
            "frontend_from_members", "tcp", one(ports.frontend), None, "haproxy endpoint from the control-plane nodes"
        ),
        SecurityRule("apiserver_from_members", "tcp", one(ports.apiserver), None, "kube-apiserver behind haproxy"),
        SecurityRule("etcd_from_members", "tcp", ETCD_PORTS, None, "stacked etcd peers and clients"),
    ]
    for prefix, service, port, reason in (
        *((c, "frontend", ports.frontend, "API endpoint for clients") for c in cfg.access.client_cidrs),
        *((c, "ssh", SSH_PORT, "SSH for administrators") for c in cfg.access.admin_cidrs),
        *((c, "metrics", ports.metrics, "Prometheus metrics for monitoring") for c in cfg.access.monitoring_cidrs),
    ):
        rules.append(SecurityRule(f"{service}_from_{_cidr_id(prefix)}", "tcp", one(port), str(prefix), reason))
    return tuple(rules)


@dataclass(frozen=True)
class OpenStackRef:
    """An existing network or subnet, by exactly one of name or id (the config checks that)."""

    name: str | None
    id: str | None

    @property
    def label(self) -> str:
        return self.name or self.id or ""


@dataclass(frozen=True)
class StatePlan:
    """Where Terraform keeps the cluster's state (credentials only ever from the environment)."""

    backend: str  # "local" or "s3"
    key: str  # the object in the bucket (s3)
    bucket: str | None = None
    region: str | None = None
    endpoint: str | None = None  # an S3-compatible store; None: AWS S3 itself
    use_path_style: bool = False
    encrypt: bool = True
    use_lockfile: bool = True

    @property
    def other_store(self) -> bool:
        """A store other than AWS: no STS, IAM or EC2 metadata to validate against, and it may
        reject the AWS SDK's newer checksums."""
        return self.endpoint is not None


def state_plan(cfg: ClusterConfig) -> StatePlan:
    s = cfg.state
    return StatePlan(
        backend=s.backend,
        key=cfg.state_key,
        bucket=s.bucket,
        region=s.region,
        endpoint=s.endpoint or None,
        use_path_style=s.use_path_style,
        encrypt=s.encrypt,
        use_lockfile=s.use_lockfile,
    )


@dataclass(frozen=True)
class Plan:
    cluster: str
    vip: str
    gateway: str
    vrid: int
    interface: str
    frontend_port: int
    apiserver_port: int
    health_port: int
    metrics_port: int
    haproxy_image: str
    keepalived_image: str
    nodes: tuple[NodePlan, ...]
    kubernetes: KubePlan
    # What the construct builds besides: the network it joins, the VMs, their group and rules.
    network: OpenStackRef
    subnet: OpenStackRef
    subnet_cidr: str
    image: str
    flavor: str
    key_pair: str
    # Nova's server-group policy. Soft anti-affinity is ignored for VMs created in parallel
    # (openshift/installer #4522): with it the VMs are created one after another.
    server_group_policy: str
    instances_in_turn: bool
    extra_security_groups: tuple[str, ...]
    security_rules: tuple[SecurityRule, ...]
    floating_ip_pool: str | None
    # No plan may destroy or replace what holds etcd and the endpoint unless the config says so
    # (allow_destroy: a planned teardown or a node replacement; docs/operate.md, "Day 2").
    protected: bool
    state: StatePlan

    @property
    def instance_name(self) -> str:
        return f"{self.cluster.upper().replace('-', '_')}_API"

    @property
    def control_plane_endpoint(self) -> str:
        return f"{self.vip}:{self.frontend_port}"

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    @property
    def init_node(self) -> NodePlan:
        """The node that runs `kubeadm init`; the others join it."""
        return self.nodes[0]


def priority_for(position: int) -> int:
    return PRIORITY_TOP - PRIORITY_STEP * position


def node_plans(cfg: ClusterConfig) -> tuple[NodePlan, ...]:
    """The members as configured, else `derive.node_names` with Neutron-allocated addresses; the
    first the highest priority."""
    if cfg.nodes.members is not None:
        named = [(m.name, str(m.address) if m.address else None) for m in cfg.nodes.members]
    else:
        named = [(name, None) for name in derive.node_names(cfg.name, cfg.nodes.count)]
    return tuple(NodePlan(name, address, priority_for(i)) for i, (name, address) in enumerate(named))


def make_plan(cfg: ClusterConfig) -> Plan:
    net, hard = cfg.network, cfg.nodes.anti_affinity == "hard"
    return Plan(
        cluster=cfg.name,
        vip=str(cfg.vip.address),
        gateway=str(derive.gateway(net.subnet.cidr, net.subnet.gateway)),
        vrid=derive.vrid(cfg.name, cfg.vip.virtual_router_id),
        interface=cfg.network.interface,
        frontend_port=cfg.ports.frontend,
        apiserver_port=cfg.ports.apiserver,
        health_port=cfg.ports.health,
        metrics_port=cfg.ports.metrics,
        haproxy_image=cfg.containers.haproxy,
        keepalived_image=cfg.containers.keepalived,
        nodes=node_plans(cfg),
        kubernetes=kube_plan(cfg),
        network=OpenStackRef(net.name, net.id),
        subnet=OpenStackRef(net.subnet.name, net.subnet.id),
        subnet_cidr=str(net.subnet.cidr),
        image=cfg.nodes.image,
        flavor=cfg.nodes.flavor,
        key_pair=cfg.nodes.key_pair,
        server_group_policy="anti-affinity" if hard else "soft-anti-affinity",
        instances_in_turn=not hard,
        extra_security_groups=cfg.nodes.extra_security_groups,
        security_rules=security_rules(cfg),
        floating_ip_pool=cfg.vip.floating_ip_pool,
        protected=not cfg.allow_destroy,
        state=state_plan(cfg),
    )


def effective_priority(priority: int, weight: int, check_ok: bool) -> int | None:
    """keepalived's view of a node: its priority after the track_script, None when in FAULT."""
    if weight == 0:
        return priority if check_ok else None
    if weight > 0:
        return min(priority + weight, 254) if check_ok else priority
    return priority if check_ok else max(priority + weight, 1)


def takeover_max_s(advert_interval: float) -> float:
    """The longest a backup waits after a master's last advert before it takes over by itself.

    RFC 5798: Master_Down_Interval = 3 x advert_int + skew, and the skew, (256 - priority) x
    advert_int / 256, stays below one advert interval whatever the priority.
    """
    return (MISSED_ADVERTS + 1) * advert_interval


def detection_worst_s() -> float:
    """haproxy's longest time from an apiserver failing its check to marking it down.

    At worst the next check is due a whole `inter` later; then `fall` checks `fastinter` apart, each
    allowed min(connect timeout, inter) to connect and the check timeout to answer (docs/design.md).
    """
    inter = APISERVER_CHECK_INTER_MS / 1000
    fastinter = APISERVER_CHECK_FASTINTER_MS / 1000
    connect = min(CONNECT_TIMEOUT_MS / 1000, inter)
    return inter + APISERVER_CHECK_FALL * (connect + APISERVER_CHECK_TIMEOUT_S) + (APISERVER_CHECK_FALL - 1) * fastinter


def shutdown_delay_s() -> int:
    """The --shutdown-delay-duration we recommend for kube-apiserver, in whole seconds."""
    return math.ceil(detection_worst_s() + SHUTDOWN_MARGIN_S)
