"""Nova and Glance, as far as terraform-provider-openstack v3.0.0 (and openstacksdk) call them.

A real Nova needs Placement, Glance, a message broker shared between processes and three
databases (well over 1 GB here), so this module emulates the calls in ROUTES and nothing else.
It trusts no one: every token is validated by the real Keystone, and a boot does to the real
Neutron what Nova does (the port gets device_id, device_owner compute:<zone> and a binding host;
a delete clears them). It refuses what Nova refuses, with Nova's status codes and messages.

`Hypervisor.boot(server)`, `delete(server)` and `power(server, action)` are all a server does beyond
bookkeeping: `Hypervisor` runs nothing; `AgentHypervisor` hands each to a process that runs the
server as a lab node (`python -m lab.hypervisor`, as root in the project's virtualenv).

Standard library only, so it runs in either virtualenv.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 96)
ZONE = "nova"
HOSTS = [f"kha-compute-{i}" for i in range(1, 9)]  # enough for 7 nodes under hard anti-affinity
BOOT_SECONDS = 1.0  # how long BUILD / REBUILD / RESIZE last
USER_DATA_MAX = 65535  # Nova's schema: base64 text, maxLength 65535
# Nova's default quotas (nova.conf [quota]); an admin changes a project's with os-quota-sets.
DEFAULT_QUOTAS = {"instances": 10, "cores": 20, "ram": 51200, "server_groups": 10, "server_group_members": 10}
FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}  # Nova's fault names
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def invalid(path: str, value: Any, why: str) -> ApiError:
    """Nova's jsonschema failure: 'Invalid input for field/attribute <path>. Value: <v>. <why>'."""
    return ApiError(400, f"Invalid input for field/attribute {path}. Value: {value}. {why}")


# --- identity and networking: the real services ---------------------------------------------


@dataclass(frozen=True)
class Context:
    token: str
    user_id: str
    project_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def require(self, rule: str, roles: tuple[str, ...] = ("member", "admin")) -> None:
        if not self.roles & set(roles):
            raise ApiError(403, f"Policy doesn't allow {rule} to be performed.")


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return err.code, dict(err.headers), parsed


class Keystone:
    """The service user's token, and validation of callers' tokens (what keystonemiddleware does)."""

    def __init__(self, url: str, username: str, password: str, project: str = "service"):
        self.url, self.username, self.password, self.project = url.rstrip("/"), username, password, project
        self._token: tuple[str, float] | None = None
        self._cache: dict[str, tuple[Context, float]] = {}
        self._lock = threading.Lock()

    def service_token(self) -> str:
        with self._lock:
            if self._token and self._token[1] > time.time() + 60:
                return self._token[0]
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {"name": self.username, "domain": {"id": "default"}, "password": self.password}
                        },
                    },
                    "scope": {"project": {"name": self.project, "domain": {"id": "default"}}},
                }
            }
            status, headers, _ = http_json("POST", f"{self.url}/v3/auth/tokens", body)
            if status != 201:
                raise ApiError(503, f"the compute service cannot log in to Keystone ({status})")
            self._token = (headers["X-Subject-Token"], time.time() + 3000)
            return self._token[0]

    def validate(self, token: str | None) -> Context:
        if not token:
            raise self.unauthorized()
        with self._lock:
            hit = self._cache.get(token)
            if hit and hit[1] > time.time():
                return hit[0]
        status, _, body = http_json(
            "GET",
            f"{self.url}/v3/auth/tokens",
            headers={"X-Auth-Token": self.service_token(), "X-Subject-Token": token},
        )
        if status != 200:
            raise self.unauthorized()
        tok = body["token"]
        if "project" not in tok:
            raise ApiError(403, "Project-scoped token required.")
        ctx = Context(
            token, tok["user"]["id"], tok["project"]["id"], frozenset(r["name"] for r in tok.get("roles", []))
        )
        with self._lock:
            self._cache[token] = (ctx, time.time() + 30)
        return ctx

    def unauthorized(self) -> ApiError:
        return ApiError(
            401,
            "The request you have made requires authentication.",
            {"WWW-Authenticate": f'Keystone uri="{self.url}/v3"'},
        )


class Neutron:
    """Calls to the real Neutron as the service user (Nova's [neutron] section is an admin)."""

    def __init__(self, url: str, keystone: Keystone):
        self.url, self.keystone = url.rstrip("/"), keystone

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = http_json(
            method, f"{self.url}/v2.0/{path}", body, {"X-Auth-Token": self.keystone.service_token()}
        )
        return status, data

    def port(self, port_id: str) -> dict[str, Any] | None:
        status, data = self.call("GET", f"ports/{urllib.parse.quote(port_id)}")
        return data["port"] if status == 200 else None

    def update_port(self, port_id: str, **fields: Any) -> None:
        status, data = self.call("PUT", f"ports/{port_id}", {"port": fields})
        if status != 200:
            raise ApiError(500, f"Neutron refused to update port {port_id}: {data}")

    def create_port(self, **fields: Any) -> dict[str, Any]:
        status, data = self.call("POST", "ports", {"port": fields})
        if status == 404:
            raise ApiError(400, f"Network {fields.get('network_id')} could not be found.")
        if status != 201:
            msg = (data or {}).get("NeutronError", {}).get("message", data) if isinstance(data, dict) else data
            raise ApiError(400 if status < 500 else 500, str(msg))
        return data["port"]

    def name_of(self, kind: str, ident: str) -> str:
        """The name of a network or security_group by its id."""
        status, data = self.call("GET", f"{kind.replace('_', '-')}s/{ident}")
        return data[kind]["name"] if status == 200 else ident


# --- the emulated state ------------------------------------------------------------------------


@dataclass
class Server:
    id: str
    name: str
    project_id: str
    user_id: str
    flavor_id: str
    image_id: str
    key_name: str | None
    user_data: str | None
    metadata: dict[str, str]
    host: str | None
    ports: list[dict[str, Any]]  # {"id", "network", "ip", "mac", "preserve"}
    security_groups: list[str]
    group_id: str | None
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    # Nova writes this one without a zone, and gophercloud parses it so: "2026-12-01T20:00:00.000000"
    launched_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"))
    status: str = "BUILD"
    next_status: str = "ACTIVE"
    until: float = field(default_factory=lambda: time.time() + BOOT_SECONDS)
    old_flavor_id: str | None = None
    tags: list[str] = field(default_factory=list)
    fault: dict[str, Any] | None = None

    def current_status(self) -> str:
        if self.next_status and time.time() >= self.until:
            self.status, self.next_status = self.next_status, ""
        return self.status


class Hypervisor:
    """Where a server runs. This one runs nothing: the emulation only books the server."""

    def boot(self, server: Server, public_key: str | None) -> None:
        pass

    def delete(self, server: Server) -> None:
        pass

    def power(self, server: Server, action: str) -> None:
        """`stop`, `start` or `reboot`, once the API has accepted it."""


class AgentHypervisor(Hypervisor):
    """Each boot, delete and power action as one JSON line to an agent's stdin (the agent runs the
    server: `lab.hypervisor`); what Nova's conductor would cast to nova-compute."""

    def __init__(self, send: Callable[[str], None]):
        self._send = send
        self._lock = threading.Lock()

    def _cast(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._send(json.dumps(message) + "\n")

    def boot(self, server: Server, public_key: str | None) -> None:
        ports = [{"id": p["id"], "ip": p["ip"], "mac": p["mac"]} for p in server.ports]
        self._cast(
            {
                "op": "boot",
                "id": server.id,
                "name": server.name,
                "user_data": server.user_data,
                "public_key": public_key,
                "ports": ports,
            }
        )

    def delete(self, server: Server) -> None:
        self._cast({"op": "delete", "id": server.id})

    def power(self, server: Server, action: str) -> None:
        self._cast({"op": "power", "id": server.id, "action": action})


class State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.flavors: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.keypairs: dict[tuple[str, str], dict[str, Any]] = {}  # (user_id, name)
        self.groups: dict[str, dict[str, Any]] = {}
        self.servers: dict[str, Server] = {}
        self.quotas: dict[str, dict[str, int]] = {}  # project_id -> what differs from DEFAULT_QUOTAS

    def quota(self, project_id: str) -> dict[str, int]:
        return {**DEFAULT_QUOTAS, **self.quotas.get(project_id, {})}

    def usage(self, project_id: str) -> dict[str, int]:
        """What a project's servers and server groups hold against its quotas."""
        servers = [s for s in self.servers.values() if s.project_id == project_id]
        flavors = [self.flavors.get(s.flavor_id) or {"vcpus": 0, "ram": 0} for s in servers]
        return {
            "instances": len(servers),
            "cores": sum(f["vcpus"] for f in flavors),
            "ram": sum(f["ram"] for f in flavors),
            "server_groups": sum(1 for g in self.groups.values() if g["project_id"] == project_id),
        }

    def add_flavor(self, name: str, vcpus: int, ram: int, disk: int, flavor_id: str | None = None) -> dict:
        flavor: dict[str, Any] = {
            "id": flavor_id or str(uuid.uuid4()),
            "name": name,
            "vcpus": vcpus,
            "ram": ram,
            "disk": disk,
            "ephemeral": 0,
            "swap": 0,
            "is_public": True,
            "description": None,
            "extra_specs": {},
        }
        self.flavors[flavor["id"]] = flavor
        return flavor

    def add_image(self, name: str, owner: str, visibility: str = "public") -> dict:
        image_id = str(uuid.uuid4())
        digest = hashlib.sha512(name.encode()).hexdigest()
        image = {
            "id": image_id,
            "name": name,
            "status": "active",
            "visibility": visibility,
            "protected": False,
            "os_hidden": False,
            "owner": owner,
            "container_format": "bare",
            "disk_format": "qcow2",
            "min_disk": 0,
            "min_ram": 0,
            "size": 1 << 20,
            "virtual_size": None,
            "checksum": hashlib.md5(name.encode()).hexdigest(),
            "os_hash_algo": "sha512",
            "os_hash_value": digest,
            "tags": [],
            "created_at": now(),
            "updated_at": now(),
            "self": f"/v2/images/{image_id}",
            "file": f"/v2/images/{image_id}/file",
            "schema": "/v2/schemas/image",
        }
        self.images[image_id] = image
        return image

    def add_keypair(self, user_id: str, name: str, public_key: str) -> dict:
        blob = base64.b64decode(public_key.split()[1])
        digest = hashlib.md5(blob).hexdigest()
        keypair = {
            "name": name,
            "public_key": public_key,
            "user_id": user_id,
            "type": "ssh",
            "fingerprint": ":".join(digest[i : i + 2] for i in range(0, 32, 2)),
            "created_at": now(),
            "id": len(self.keypairs) + 1,
        }
        self.keypairs[(user_id, name)] = keypair
        return keypair


# --- request plumbing ----------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    base: str  # http://127.0.0.1:port
    version: tuple[int, int] = MIN_VERSION
    auth: Context | None = None  # set once Keystone has validated the token

    @property
    def ctx(self) -> Context:
        if self.auth is None:
            raise ApiError(401, "The request you have made requires authentication.")
        return self.auth

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ApiError(400, "Malformed request body") from None

    def member(self, key: str) -> dict[str, Any]:
        """The body's one object, e.g. {"server": {...}}, as Nova's schema demands it."""
        body = self.json()
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, dict):
            raise invalid(key, body, f"'{key}' is a required property")
        return value

    def at_least(self, major: int, minor: int) -> bool:
        return self.version >= (major, minor)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Route = tuple[str, str, str]  # method, path pattern, handler name


def serve(app: Any, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve `app.handle(request) -> (status, headers, body)` on host:port in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(
                self.command,
                url.path.rstrip("/") or "/",
                urllib.parse.parse_qs(url.query),
                self.headers,
                self.rfile.read(length) if length else b"",
                f"http://{host}:{port}",
            )
            status, headers, body = app.handle(req)
            payload = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any  # noqa: N815 (http.server's names)

        def log_message(self, *args: Any) -> None:  # quiet: the launcher's log is the services'
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name=f"{type(app).__name__}:{port}").start()
    return server


def dispatch(app: Any, routes: list[Route], req: Request) -> tuple[int, dict[str, str], Any]:
    for method, pattern, handler in routes:
        match = re.fullmatch(pattern, req.path)
        if match and method == req.method:
            return getattr(app, handler)(req, *match.groups())
    if any(re.fullmatch(p, req.path) for _, p, _ in routes):
        raise ApiError(405, "The method specified is not allowed for this resource.")
    raise ApiError(404, "The resource could not be found.")


# --- compute (Nova v2.1) -------------------------------------------------------------------------

# Every call the emulation answers, one per line: who calls it and why.
COMPUTE_ROUTES: list[Route] = [
    ("GET", r"/", "versions"),  # version discovery (openstacksdk)
    ("GET", r"/v2\.1", "version"),  # the v2.1 document, microversion range
    ("GET", r"/v2\.1/flavors", "list_flavors"),  # openstacksdk
    ("GET", r"/v2\.1/flavors/detail", "list_flavors_detail"),  # provider: flavor_name -> id
    ("POST", r"/v2\.1/flavors", "create_flavor"),  # admin: tests make flavors
    ("GET", r"/v2\.1/flavors/([^/]+)", "get_flavor"),  # provider Read: flavor_name by id
    ("DELETE", r"/v2\.1/flavors/([^/]+)", "delete_flavor"),  # admin: day 2 "flavor deleted"
    ("GET", r"/v2\.1/flavors/([^/]+)/os-extra_specs", "flavor_extra_specs"),  # openstacksdk
    ("GET", r"/v2\.1/images", "proxy_images"),  # provider rebuild: image_name -> id (< 2.36)
    ("GET", r"/v2\.1/images/([^/]+)", "proxy_image"),  # the same proxy, one image (< 2.36)
    ("GET", r"/v2\.1/os-keypairs", "list_keypairs"),  # openstacksdk, provider import
    ("POST", r"/v2\.1/os-keypairs", "create_keypair"),  # openstack_compute_keypair_v2
    ("GET", r"/v2\.1/os-keypairs/([^/]+)", "get_keypair"),  # keypair Read
    ("DELETE", r"/v2\.1/os-keypairs/([^/]+)", "delete_keypair"),  # keypair Delete, day 2 key change
    ("GET", r"/v2\.1/os-server-groups", "list_groups"),  # openstacksdk
    ("POST", r"/v2\.1/os-server-groups", "create_group"),  # servergroup Create: policy, then policies
    ("GET", r"/v2\.1/os-server-groups/([^/]+)", "get_group"),  # servergroup Read at 2.64, then legacy
    ("DELETE", r"/v2\.1/os-server-groups/([^/]+)", "delete_group"),  # servergroup Delete
    ("POST", r"/v2\.1/servers", "create_server"),  # instance Create (user_data, port, hints)
    ("GET", r"/v2\.1/servers", "list_servers"),  # openstacksdk
    ("GET", r"/v2\.1/servers/detail", "list_servers_detail"),  # openstacksdk, read-back tests
    ("GET", r"/v2\.1/servers/([^/]+)", "get_server"),  # instance Read, every state wait
    ("PUT", r"/v2\.1/servers/([^/]+)", "update_server"),  # instance Update: name
    ("DELETE", r"/v2\.1/servers/([^/]+)", "delete_server"),  # instance Delete
    ("POST", r"/v2\.1/servers/([^/]+)/action", "server_action"),  # rebuild, resize, confirmResize, stop, start, reboot
    ("GET", r"/v2\.1/servers/([^/]+)/metadata", "get_metadata"),  # import
    ("POST", r"/v2\.1/servers/([^/]+)/metadata", "update_metadata"),  # instance Update: metadata
    ("PUT", r"/v2\.1/servers/([^/]+)/metadata", "replace_metadata"),  # openstacksdk
    ("DELETE", r"/v2\.1/servers/([^/]+)/metadata/([^/]+)", "delete_metadatum"),  # instance Update
    ("GET", r"/v2\.1/servers/([^/]+)/tags", "get_tags"),  # instance Read at 2.26
    ("PUT", r"/v2\.1/servers/([^/]+)/tags", "replace_tags"),  # instance Update: tags at 2.26
    ("GET", r"/v2\.1/servers/([^/]+)/os-interface", "list_interfaces"),  # openstacksdk
    ("GET", r"/v2\.1/limits", "limits"),  # preflight: quotas and usage of the caller's project
    ("GET", r"/v2\.1/os-quota-sets/([^/]+)", "get_quotas"),  # openstacksdk
    ("PUT", r"/v2\.1/os-quota-sets/([^/]+)", "update_quotas"),  # admin: tests tighten a quota
]


def fmt(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def parse_microversion(headers: Any) -> tuple[int, int]:
    raw = None
    for part in (headers.get("OpenStack-API-Version") or "").split(","):
        words = part.split()
        if len(words) == 2 and words[0].lower() == "compute":
            raw = words[1]
    raw = raw or headers.get("X-OpenStack-Nova-API-Version")
    if not raw:
        return MIN_VERSION
    if raw.lower() == "latest":
        return MAX_VERSION
    match = re.fullmatch(r"(\d+)\.(\d+)", raw.strip())
    if not match:
        raise ApiError(400, f"API Version String {raw} is of invalid format. Must be of format MajorNum.MinorNum.")
    version = (int(match[1]), int(match[2]))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ApiError(
            406,
            f"Version {raw} is not supported by the API. Minimum is {fmt(MIN_VERSION)} "
            f"and maximum is {fmt(MAX_VERSION)}.",
        )
    return version


class Compute:
    def __init__(self, state: State, keystone: Keystone, neutron: Neutron, hypervisor: Hypervisor | None = None):
        self.state, self.keystone, self.neutron = state, keystone, neutron
        self.hypervisor = hypervisor or Hypervisor()

    def handle(self, req: Request) -> tuple[int, dict[str, str], Any]:
        headers: dict[str, str] = {}
        try:
            if req.path in ("/", "/v2.1"):
                return dispatch(self, COMPUTE_ROUTES, req)
            req.version = parse_microversion(req.headers)
            headers = {
                "OpenStack-API-Version": f"compute {fmt(req.version)}",
                "X-OpenStack-Nova-API-Version": fmt(req.version),
                "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
            }
            req.auth = self.keystone.validate(req.headers.get("X-Auth-Token"))
            status, extra, body = dispatch(self, COMPUTE_ROUTES, req)
            return status, {**headers, **extra}, body
        except ApiError as err:
            if err.status == 401:
                return 401, err.headers, {"error": {"code": 401, "title": "Unauthorized", "message": err.message}}
            name = FAULTS.get(err.status, "computeFault")
            return err.status, {**headers, **err.headers}, {name: {"code": err.status, "message": err.message}}

    # version documents
    def _version_doc(self, req: Request) -> dict[str, Any]:
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": fmt(MAX_VERSION),
            "min_version": fmt(MIN_VERSION),
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{req.base}/v2.1/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
        }

    def versions(self, req: Request):
        return 200, {}, {"versions": [self._version_doc(req)]}

    def version(self, req: Request):
        return 200, {}, {"version": self._version_doc(req)}

    # flavors
    def _flavor(self, flavor_id: str) -> dict[str, Any]:
        flavor = self.state.flavors.get(flavor_id)
        if flavor is None:
            raise ApiError(404, f"Flavor {flavor_id} could not be found.")
        return flavor

    def _flavor_view(self, req: Request, f: dict[str, Any], detail: bool = True) -> dict[str, Any]:
        links = [
            {"rel": "self", "href": f"{req.base}/v2.1/flavors/{f['id']}"},
            {"rel": "bookmark", "href": f"{req.base}/flavors/{f['id']}"},
        ]
        view: dict[str, Any] = {"id": f["id"], "name": f["name"], "links": links}
        if req.at_least(2, 55):
            view["description"] = f["description"]
        if detail:
            view.update(
                {
                    "ram": f["ram"],
                    "vcpus": f["vcpus"],
                    "disk": f["disk"],
                    "OS-FLV-EXT-DATA:ephemeral": f["ephemeral"],
                    "swap": f["swap"] if req.at_least(2, 75) else (f["swap"] or ""),
                    "rxtx_factor": 1.0,
                    "os-flavor-access:is_public": f["is_public"],
                    "OS-FLV-DISABLED:disabled": False,
                }
            )
            if req.at_least(2, 61):
                view["extra_specs"] = f["extra_specs"]
        return view

    def list_flavors(self, req: Request, detail: bool = False):
        with self.state.lock:
            flavors = sorted(self.state.flavors.values(), key=lambda f: f["id"])
            return 200, {}, {"flavors": [self._flavor_view(req, f, detail) for f in flavors]}

    def list_flavors_detail(self, req: Request):
        return self.list_flavors(req, detail=True)

    def get_flavor(self, req: Request, flavor_id: str):
        with self.state.lock:
            return 200, {}, {"flavor": self._flavor_view(req, self._flavor(flavor_id))}

    def flavor_extra_specs(self, req: Request, flavor_id: str):
        with self.state.lock:
            return 200, {}, {"extra_specs": self._flavor(flavor_id)["extra_specs"]}

    def create_flavor(self, req: Request):
        req.ctx.require("os_compute_api:os-flavor-manage:create", ("admin",))
        body = (req.json() or {}).get("flavor") or {}
        for key in ("name", "ram", "vcpus", "disk"):
            if key not in body:
                raise invalid("flavor", body, f"'{key}' is a required property")
        with self.state.lock:
            if any(f["name"] == body["name"] for f in self.state.flavors.values()):
                raise ApiError(409, f"Flavor with name {body['name']} already exists.")
            flavor = self.state.add_flavor(
                body["name"], int(body["vcpus"]), int(body["ram"]), int(body["disk"]), body.get("id")
            )
            return 200, {}, {"flavor": self._flavor_view(req, flavor)}

    def delete_flavor(self, req: Request, flavor_id: str):
        req.ctx.require("os_compute_api:os-flavor-manage:delete", ("admin",))
        with self.state.lock:
            self._flavor(flavor_id)
            del self.state.flavors[flavor_id]
        return 202, {}, None

    # the deprecated image proxy (the provider's rebuild looks names up through it)
    def _proxy_check(self, req: Request) -> None:
        if req.at_least(2, 36):
            raise ApiError(404, "The resource could not be found.")

    def _proxy_view(self, req: Request, image: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": image["id"],
            "name": image["name"],
            "status": image["status"].upper(),
            "links": [{"rel": "self", "href": f"{req.base}/v2.1/images/{image['id']}"}],
        }

    def proxy_images(self, req: Request):
        self._proxy_check(req)
        name = req.arg("name")
        with self.state.lock:
            images = [i for i in visible_images(self.state, req.ctx) if name is None or i["name"] == name]
            return 200, {}, {"images": [self._proxy_view(req, i) for i in images]}

    def proxy_image(self, req: Request, image_id: str):
        self._proxy_check(req)
        with self.state.lock:
            for image in visible_images(self.state, req.ctx):
                if image["id"] == image_id:
                    return 200, {}, {"image": self._proxy_view(req, image)}
        raise ApiError(404, "Image not found.")

    # key pairs (per user)
    def _keypair_user(self, req: Request) -> str:
        user_id = req.arg("user_id") if req.at_least(2, 10) else None
        if user_id and user_id != req.ctx.user_id:
            req.ctx.require("os_compute_api:os-keypairs:index", ("admin",))
            return user_id
        return req.ctx.user_id

    def _keypair_view(self, req: Request, kp: dict[str, Any], full: bool) -> dict[str, Any]:
        view = {k: kp[k] for k in ("name", "public_key", "fingerprint")}
        if req.at_least(2, 2):
            view["type"] = kp["type"]
        if full:
            view.update(
                user_id=kp["user_id"],
                id=kp["id"],
                created_at=kp["created_at"],
                deleted=False,
                deleted_at=None,
                updated_at=None,
            )
        return view

    def list_keypairs(self, req: Request):
        user_id = self._keypair_user(req)
        with self.state.lock:
            kps = [kp for (uid, _), kp in sorted(self.state.keypairs.items()) if uid == user_id]
            return 200, {}, {"keypairs": [{"keypair": self._keypair_view(req, kp, False)} for kp in kps]}

    def create_keypair(self, req: Request):
        req.ctx.require("os_compute_api:os-keypairs:create")
        body: dict[str, Any] = (req.json() or {}).get("keypair") or {}
        name = body.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9 _.@-]{1,255}", name):
            raise invalid("name", name, "'name' must be 1-255 letters, digits, spaces, '_', '.', '@' or '-'")
        user_id: str = body["user_id"] if req.at_least(2, 10) and body.get("user_id") else req.ctx.user_id
        if user_id != req.ctx.user_id:
            req.ctx.require("os_compute_api:os-keypairs:create", ("admin",))
        public_key = body.get("public_key")
        if not public_key:
            raise ApiError(400, "This emulation stores public keys only: pass public_key.")
        try:
            with self.state.lock:
                if (user_id, name) in self.state.keypairs:
                    raise ApiError(409, f"Key pair '{name}' already exists.")
                kp = self.state.add_keypair(user_id, name, public_key)
        except (IndexError, binascii.Error, ValueError):
            raise ApiError(400, "Keypair data is invalid: failed to generate fingerprint") from None
        return (
            (201 if req.at_least(2, 2) else 200),
            {},
            {"keypair": self._keypair_view(req, kp, False) | {"user_id": user_id}},
        )

    def _find_keypair(self, req: Request, name: str) -> dict[str, Any]:
        user_id = self._keypair_user(req)
        kp = self.state.keypairs.get((user_id, urllib.parse.unquote(name)))
        if kp is None:
            raise ApiError(404, f"Keypair {urllib.parse.unquote(name)} not found for user {user_id}")
        return kp

    def get_keypair(self, req: Request, name: str):
        with self.state.lock:
            return 200, {}, {"keypair": self._keypair_view(req, self._find_keypair(req, name), True)}

    def delete_keypair(self, req: Request, name: str):
        with self.state.lock:
            kp = self._find_keypair(req, name)
            del self.state.keypairs[(kp["user_id"], kp["name"])]
        return (204 if req.at_least(2, 2) else 202), {}, None

    # server groups
    def _group_view(self, req: Request, g: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {"id": g["id"], "name": g["name"], "members": list(g["members"])}
        if req.at_least(2, 64):
            view.update(policy=g["policy"], rules=g["rules"])
        else:
            view.update(policies=[g["policy"]], metadata={})
        if req.at_least(2, 13):
            view.update(project_id=g["project_id"], user_id=g["user_id"])
        return view

    def _group(self, req: Request, group_id: str) -> dict[str, Any]:
        g = self.state.groups.get(group_id)
        if g is None or (g["project_id"] != req.ctx.project_id and not req.ctx.is_admin):
            raise ApiError(404, f"Instance group {group_id} could not be found.")
        return g

    def list_groups(self, req: Request):
        with self.state.lock:
            every = req.ctx.is_admin and (req.arg("all_projects") or "").lower() in ("true", "1")
            groups = [g for g in self.state.groups.values() if every or g["project_id"] == req.ctx.project_id]
            return 200, {}, {"server_groups": [self._group_view(req, g) for g in groups]}

    def create_group(self, req: Request):
        req.ctx.require("os_compute_api:os-server-groups:create")
        sg = req.member("server_group")
        allowed = ["anti-affinity", "affinity"]
        if req.at_least(2, 15):
            allowed += ["soft-anti-affinity", "soft-affinity"]
        if req.at_least(2, 64):
            known, required = {"name", "policy", "rules"}, "policy"
        else:
            known, required = {"name", "policies"}, "policies"
        extra = sorted(set(sg) - known)
        if extra:
            raise invalid(
                "server_group",
                sg,
                f"Additional properties are not allowed ({', '.join(repr(e) for e in extra)} "
                f"{'was' if len(extra) == 1 else 'were'} unexpected)",
            )
        for key in ("name", required):
            if key not in sg:
                raise invalid("server_group", sg, f"'{key}' is a required property")
        if not isinstance(sg["name"], str) or not 1 <= len(sg["name"]) <= 255:
            raise invalid("name", sg["name"], "must be a string of 1 to 255 characters")
        if required == "policies":
            policies = sg["policies"]
            if not isinstance(policies, list) or len(policies) != 1:
                raise invalid("policies", policies, f"{policies!r} should be a list of exactly one policy")
            policy = policies[0]
            where = "0"
        else:
            policy, where = sg["policy"], "policy"
        if policy not in allowed:
            raise invalid(where, policy, f"{policy!r} is not one of {allowed!r}")
        rules = sg.get("rules") or {}
        if rules and policy != "anti-affinity":
            raise ApiError(400, "Only anti-affinity policy supports rules.")
        group = {
            "id": str(uuid.uuid4()),
            "name": sg["name"],
            "policy": policy,
            "rules": rules,
            "members": [],
            "project_id": req.ctx.project_id,
            "user_id": req.ctx.user_id,
        }
        with self.state.lock:
            self._check_quota(req.ctx.project_id, {"server_groups": 1})
            self.state.groups[group["id"]] = group
        return 200, {}, {"server_group": self._group_view(req, group)}

    def get_group(self, req: Request, group_id: str):
        with self.state.lock:
            return 200, {}, {"server_group": self._group_view(req, self._group(req, group_id))}

    def delete_group(self, req: Request, group_id: str):
        req.ctx.require("os_compute_api:os-server-groups:delete")
        with self.state.lock:
            self._group(req, group_id)
            del self.state.groups[group_id]
        return 204, {}, None

    # servers
    def _server(self, req: Request, server_id: str) -> Server:
        s = self.state.servers.get(server_id)
        if s is None or (s.project_id != req.ctx.project_id and not req.ctx.is_admin):
            raise ApiError(404, f"Instance {server_id} could not be found.")
        return s

    def _server_view(self, req: Request, s: Server) -> dict[str, Any]:
        status = s.current_status()
        flavor = self.state.flavors.get(s.flavor_id)
        if req.at_least(2, 47):
            f = flavor or {"name": "", "vcpus": 0, "ram": 0, "disk": 0, "ephemeral": 0, "swap": 0, "extra_specs": {}}
            flavor_view: dict[str, Any] = {
                "original_name": f["name"],
                "vcpus": f["vcpus"],
                "ram": f["ram"],
                "disk": f["disk"],
                "ephemeral": f["ephemeral"],
                "swap": f["swap"],
                "extra_specs": f["extra_specs"],
            }
        else:
            flavor_view = {
                "id": s.flavor_id,
                "links": [{"rel": "bookmark", "href": f"{req.base}/flavors/{s.flavor_id}"}],
            }
        addresses: dict[str, list[dict[str, Any]]] = {}
        for p in s.ports:
            addresses.setdefault(p["network"], []).append(
                {"version": 4, "addr": p["ip"], "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": p["mac"]}
            )
        vm_state = {
            "ACTIVE": "active",
            "BUILD": "building",
            "ERROR": "error",
            "SHUTOFF": "stopped",
            "REBUILD": "active",
            "RESIZE": "active",
            "VERIFY_RESIZE": "resized",
        }[status]
        view: dict[str, Any] = {
            "id": s.id,
            "name": s.name,
            "status": status,
            "tenant_id": s.project_id,
            "user_id": s.user_id,
            "metadata": dict(s.metadata),
            "hostId": hashlib.sha224(f"{s.project_id}{s.host}".encode()).hexdigest() if s.host else "",
            "image": {"id": s.image_id, "links": [{"rel": "bookmark", "href": f"{req.base}/images/{s.image_id}"}]},
            "flavor": flavor_view,
            "created": s.created,
            "updated": s.updated,
            "addresses": addresses,
            "accessIPv4": "",
            "accessIPv6": "",
            "progress": 0 if status != "ACTIVE" else 100,
            "links": [
                {"rel": "self", "href": f"{req.base}/v2.1/servers/{s.id}"},
                {"rel": "bookmark", "href": f"{req.base}/servers/{s.id}"},
            ],
            "OS-DCF:diskConfig": "MANUAL",
            "OS-EXT-AZ:availability_zone": ZONE if s.host else "",
            "config_drive": "",
            "key_name": s.key_name,
            "security_groups": [{"name": n} for n in s.security_groups],
            "OS-EXT-STS:task_state": None,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:power_state": 1 if status == "ACTIVE" else 0,
            "os-extended-volumes:volumes_attached": [],
            "OS-SRV-USG:launched_at": s.launched_at,
            "OS-SRV-USG:terminated_at": None,
        }
        if s.fault:
            view["fault"] = s.fault
        if req.ctx.is_admin:
            view.update(
                {
                    "OS-EXT-SRV-ATTR:host": s.host,
                    "OS-EXT-SRV-ATTR:hypervisor_hostname": s.host,
                    "OS-EXT-SRV-ATTR:instance_name": f"instance-{s.id[:8]}",
                }
            )
            if req.at_least(2, 3):
                view.update(
                    {
                        "OS-EXT-SRV-ATTR:user_data": s.user_data,
                        "OS-EXT-SRV-ATTR:hostname": s.name,
                        "OS-EXT-SRV-ATTR:reservation_id": f"r-{s.id[:8]}",
                        "OS-EXT-SRV-ATTR:launch_index": 0,
                        "OS-EXT-SRV-ATTR:kernel_id": "",
                        "OS-EXT-SRV-ATTR:ramdisk_id": "",
                        "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                    }
                )
        if req.at_least(2, 9):
            view["locked"] = False
        if req.at_least(2, 19):
            view["description"] = None
        if req.at_least(2, 26):
            view["tags"] = list(s.tags)
        if req.at_least(2, 71):
            view["server_groups"] = [s.group_id] if s.group_id else []
        if req.at_least(2, 73):
            view["locked_reason"] = None
        if req.at_least(2, 96):
            view["pinned_availability_zone"] = None
        return view

    def list_servers(self, req: Request, detail: bool = False):
        name = req.arg("name")
        with self.state.lock:
            every = req.ctx.is_admin and (req.arg("all_tenants") or "").lower() in ("true", "1")
            servers = [
                s
                for s in self.state.servers.values()
                if (every or s.project_id == req.ctx.project_id) and (name is None or re.search(name, s.name))
            ]
            if detail:
                return 200, {}, {"servers": [self._server_view(req, s) for s in servers]}
            return (
                200,
                {},
                {
                    "servers": [
                        {
                            "id": s.id,
                            "name": s.name,
                            "links": [{"rel": "self", "href": f"{req.base}/v2.1/servers/{s.id}"}],
                        }
                        for s in servers
                    ]
                },
            )

    def list_servers_detail(self, req: Request):
        return self.list_servers(req, detail=True)

    def get_server(self, req: Request, server_id: str):
        with self.state.lock:
            return 200, {}, {"server": self._server_view(req, self._server(req, server_id))}

    def create_server(self, req: Request):
        req.ctx.require("os_compute_api:servers:create")
        server, body = req.member("server"), req.json()
        for key in ("name", "flavorRef"):
            if key not in server:
                raise invalid("server", server, f"'{key}' is a required property")
        if req.at_least(2, 37) and "networks" not in server:
            raise invalid("server", server, "'networks' is a required property")
        if server.get("block_device_mapping_v2") or server.get("block_device_mapping"):
            raise ApiError(400, "Block devices are not emulated: boot from an image.")
        user_data = server.get("user_data")
        if user_data is not None:
            if not isinstance(user_data, str):
                raise invalid("user_data", user_data, f"{user_data!r} is not of type 'string'")
            if len(user_data) > USER_DATA_MAX:
                raise invalid("user_data", user_data, f"{user_data!r} is too long")
            try:
                base64.b64decode(user_data, validate=True)
            except binascii.Error:
                raise invalid("user_data", user_data, f"{user_data!r} is not a 'base64'") from None
        metadata = server.get("metadata") or {}
        for key, value in metadata.items():
            if not isinstance(value, str) or len(value) > 255 or not 1 <= len(key) <= 255:
                raise invalid("metadata", metadata, "keys and values must be strings of at most 255 characters")
        hints = body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {}
        group_id = hints.get("group")
        if group_id is not None and not (isinstance(group_id, str) and UUID_RE.match(group_id)):
            raise invalid("group", group_id, f"{group_id!r} is not a 'uuid'")
        networks = server.get("networks", [])
        if networks == "auto":
            raise ApiError(400, "Automatic allocation is not emulated: pass networks as a list or 'none'.")
        if networks == "none":
            networks = []
        if not isinstance(networks, list):
            raise invalid("networks", networks, f"{networks!r} is not of type 'array'")
        flavor_id = str(server["flavorRef"]).rstrip("/").rsplit("/", 1)[-1]
        image_id = str(server.get("imageRef") or "").rstrip("/").rsplit("/", 1)[-1]
        key_name = server.get("key_name")
        with self.state.lock:
            if flavor_id not in self.state.flavors:
                raise ApiError(400, "Invalid flavorRef provided.")
            image = next((i for i in visible_images(self.state, req.ctx) if i["id"] == image_id), None)
            if image is None:
                raise ApiError(400, "Can not find requested image")
            if image["status"] != "active":
                raise ApiError(400, f"Image {image_id} is not active.")
            if key_name is not None and (req.ctx.user_id, key_name) not in self.state.keypairs:
                raise ApiError(400, "Invalid key_name provided.")
            flavor = self.state.flavors[flavor_id]
            self._check_quota(req.ctx.project_id, {"instances": 1, "cores": flavor["vcpus"], "ram": flavor["ram"]})
            group = None
            if group_id is not None:
                group = self.state.groups.get(group_id)
                if group is None or group["project_id"] != req.ctx.project_id:
                    raise ApiError(400, f"Instance group {group_id} could not be found.")
                members = self.state.quota(req.ctx.project_id)["server_group_members"]
                if members != -1 and len(group["members"]) >= members:
                    raise ApiError(403, "Quota exceeded, too many servers in group")
        ports = self._claim_ports(req, networks)
        server_id = str(uuid.uuid4())
        with self.state.lock:
            host = self._schedule(group)
            s = Server(
                id=server_id,
                name=server["name"],
                project_id=req.ctx.project_id,
                user_id=req.ctx.user_id,
                flavor_id=flavor_id,
                image_id=image_id,
                key_name=key_name,
                user_data=user_data,
                metadata=dict(metadata),
                host=host,
                ports=[],
                security_groups=[],
                group_id=group_id,
            )
            if host is None:
                s.status, s.next_status = "ERROR", ""
                s.fault = {
                    "code": 500,
                    "created": now(),
                    "message": "No valid host was found. There are not enough hosts available.",
                }
            self.state.servers[server_id] = s
            if group is not None:
                group["members"].append(server_id)
        if host is not None:
            s.ports, s.security_groups = self._bind_ports(req, s, ports)
            keypair = self.state.keypairs.get((s.user_id, s.key_name or ""))
            self.hypervisor.boot(s, keypair["public_key"] if keypair else None)
        else:
            self._release(ports)
        view = {
            "id": s.id,
            "links": self._server_view(req, s)["links"],
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": n} for n in s.security_groups or ["default"]],
            "adminPass": secrets.token_urlsafe(12),
        }
        return 202, {"Location": f"{req.base}/v2.1/servers/{s.id}"}, {"server": view}

    def _claim_ports(self, req: Request, networks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Check the requested ports as Nova's API does; create ports for networks given by uuid."""
        claimed: list[dict[str, Any]] = []
        try:
            for net in networks:
                if not isinstance(net, dict):
                    raise invalid("networks", networks, f"{net!r} is not of type 'object'")
                if net.get("port"):
                    port = self.neutron.port(net["port"])
                    if port is None:
                        raise ApiError(400, f"Port id {net['port']} could not be found.")
                    if port.get("device_id"):
                        raise ApiError(409, f"Port {port['id']} is still in use.")
                    if port["project_id"] != req.ctx.project_id and not req.ctx.is_admin:
                        raise ApiError(400, f"Port id {net['port']} could not be found.")
                    claimed.append({**port, "preserve": True})
                elif net.get("uuid"):
                    fields: dict[str, Any] = {"network_id": net["uuid"], "project_id": req.ctx.project_id}
                    if net.get("fixed_ip"):
                        fields["fixed_ips"] = [{"ip_address": net["fixed_ip"]}]
                    claimed.append({**self.neutron.create_port(**fields), "preserve": False})
                else:
                    raise ApiError(400, "Bad networks format: network uuid is not in proper format ()")
        except ApiError:
            self._release(claimed)
            raise
        return claimed

    def _schedule(self, group: dict[str, Any] | None) -> str | None:
        """The host for a new server: spread by default; the group's policy decides with a group."""
        load = {h: 0 for h in HOSTS}
        for s in self.state.servers.values():
            if s.host in load:
                load[s.host] += 1
        candidates = sorted(HOSTS, key=lambda h: (load[h], h))
        if group is None:
            return candidates[0]
        taken = [self.state.servers[m].host for m in group["members"] if m in self.state.servers]
        policy = group["policy"]
        if policy == "anti-affinity":
            limit = int((group["rules"] or {}).get("max_server_per_host", 1))
            free = [h for h in candidates if taken.count(h) < limit]
            return free[0] if free else None
        if policy == "affinity":
            return taken[0] if taken and taken[0] else candidates[0]
        if policy == "soft-anti-affinity":
            return sorted(candidates, key=lambda h: taken.count(h))[0]
        return taken[0] if taken and taken[0] else candidates[0]  # soft-affinity

    def _bind_ports(self, req: Request, s: Server, ports: list[dict[str, Any]]) -> tuple[list[dict], list[str]]:
        bound, groups = [], []
        for port in ports:
            self.neutron.update_port(
                port["id"], device_id=s.id, device_owner=f"compute:{ZONE}", **{"binding:host_id": s.host}
            )
            ip = (port.get("fixed_ips") or [{}])[0].get("ip_address", "")
            bound.append(
                {
                    "id": port["id"],
                    "network": self.neutron.name_of("network", port["network_id"]),
                    "ip": ip,
                    "mac": port["mac_address"],
                    "preserve": port["preserve"],
                }
            )
            for sg in port.get("security_groups", []):
                name = self.neutron.name_of("security_group", sg)
                if name not in groups:
                    groups.append(name)
        return bound, groups

    def _release(self, ports: list[dict[str, Any]]) -> None:
        """Undo a boot on Neutron: delete the ports Nova made, unbind the ones the user made."""
        for port in ports:
            if port["preserve"]:
                self.neutron.update_port(
                    port["id"], device_id="", device_owner="", **{"binding:host_id": "", "binding:profile": {}}
                )
            else:
                self.neutron.call("DELETE", f"ports/{port['id']}")

    def update_server(self, req: Request, server_id: str):
        req.ctx.require("os_compute_api:servers:update")
        changes = (req.json() or {}).get("server") or {}
        with self.state.lock:
            s = self._server(req, server_id)
            if "name" in changes:
                s.name = changes["name"]
            s.updated = now()
            return 200, {}, {"server": self._server_view(req, s)}

    def delete_server(self, req: Request, server_id: str):
        req.ctx.require("os_compute_api:servers:delete")
        with self.state.lock:
            s = self._server(req, server_id)
            del self.state.servers[server_id]
            for g in self.state.groups.values():
                if server_id in g["members"]:
                    g["members"].remove(server_id)
        self._release(s.ports)
        self.hypervisor.delete(s)
        return 204, {}, None

    def server_action(self, req: Request, server_id: str):
        body = req.json()
        if not isinstance(body, dict) or len(body) != 1:
            raise ApiError(400, "There is no such action: None")
        action, args = next(iter(body.items()))
        req.ctx.require(f"os_compute_api:servers:{action}")
        with self.state.lock:
            s = self._server(req, server_id)
            status = s.current_status()

            def conflict() -> ApiError:
                return ApiError(
                    409,
                    f"Cannot '{action}' instance {s.id} while it is in vm_state "
                    f"{self._server_view(req, s)['OS-EXT-STS:vm_state']}",
                )

            def transition(during: str, after: str) -> None:
                s.status, s.next_status, s.until, s.updated = during, after, time.time() + BOOT_SECONDS, now()

            if action == "rebuild":
                if status not in ("ACTIVE", "SHUTOFF", "ERROR"):
                    raise conflict()
                image_id = str((args or {}).get("imageRef", "")).rstrip("/").rsplit("/", 1)[-1]
                if not any(i["id"] == image_id for i in visible_images(self.state, req.ctx)):
                    raise ApiError(400, "Cannot find requested image")
                s.image_id = image_id
                if "name" in (args or {}):
                    s.name = args["name"]
                transition("REBUILD", "ACTIVE")
                return 202, {}, {"server": self._server_view(req, s)}
            if action == "resize":
                if status not in ("ACTIVE", "SHUTOFF"):
                    raise conflict()
                flavor_id = str((args or {}).get("flavorRef", "")).rstrip("/").rsplit("/", 1)[-1]
                if flavor_id not in self.state.flavors:
                    raise ApiError(400, f"Flavor {flavor_id} could not be found.")
                if flavor_id == s.flavor_id:
                    raise ApiError(400, "When resizing, instances must change flavor!")
                s.old_flavor_id, s.flavor_id = s.flavor_id, flavor_id
                transition("RESIZE", "VERIFY_RESIZE")
                return 202, {}, None
            if action in ("confirmResize", "revertResize"):
                if status != "VERIFY_RESIZE":
                    raise conflict()
                if action == "revertResize":
                    s.flavor_id = s.old_flavor_id or s.flavor_id
                s.status, s.next_status, s.old_flavor_id = "ACTIVE", "", None
                return (204 if action == "confirmResize" else 202), {}, None
            if action in ("os-stop", "os-start"):
                wanted, target = ("ACTIVE", "SHUTOFF") if action == "os-stop" else ("SHUTOFF", "ACTIVE")
                if status != wanted:
                    raise conflict()
                s.status, s.next_status = target, ""
                self.hypervisor.power(s, "stop" if action == "os-stop" else "start")
                return 202, {}, None
            if action == "reboot":
                kind = str((args or {}).get("type", "")).upper()
                if kind not in ("SOFT", "HARD"):
                    raise invalid("type", kind, f"{kind!r} is not one of ['SOFT', 'HARD', 'soft', 'hard']")
                if status != "ACTIVE" and not (kind == "HARD" and status in ("SHUTOFF", "ERROR")):
                    raise conflict()
                transition("REBOOT" if kind == "SOFT" else "HARD_REBOOT", "ACTIVE")
                self.hypervisor.power(s, "reboot")
                return 202, {}, None
        raise ApiError(400, f"There is no such action: {action}")

    def get_metadata(self, req: Request, server_id: str):
        with self.state.lock:
            return 200, {}, {"metadata": dict(self._server(req, server_id).metadata)}

    def update_metadata(self, req: Request, server_id: str, replace: bool = False):
        req.ctx.require("os_compute_api:server-metadata:update")
        new = (req.json() or {}).get("metadata")
        if not isinstance(new, dict):
            raise invalid("metadata", new, "'metadata' is a required property")
        with self.state.lock:
            s = self._server(req, server_id)
            s.metadata = dict(new) if replace else {**s.metadata, **new}
            return 200, {}, {"metadata": dict(s.metadata)}

    def replace_metadata(self, req: Request, server_id: str):
        return self.update_metadata(req, server_id, replace=True)

    def delete_metadatum(self, req: Request, server_id: str, key: str):
        req.ctx.require("os_compute_api:server-metadata:delete")
        with self.state.lock:
            s = self._server(req, server_id)
            key = urllib.parse.unquote(key)
            if key not in s.metadata:
                raise ApiError(404, "Metadata item was not found")
            del s.metadata[key]
        return 204, {}, None

    def _tags_check(self, req: Request) -> None:
        if not req.at_least(2, 26):
            raise ApiError(404, "The resource could not be found.")

    def get_tags(self, req: Request, server_id: str):
        self._tags_check(req)
        with self.state.lock:
            return 200, {}, {"tags": list(self._server(req, server_id).tags)}

    def replace_tags(self, req: Request, server_id: str):
        self._tags_check(req)
        req.ctx.require("os_compute_api:os-server-tags:update_all")
        tags = (req.json() or {}).get("tags")
        if not isinstance(tags, list) or len(tags) > 50:
            raise invalid("tags", tags, "'tags' must be a list of at most 50 strings")
        with self.state.lock:
            s = self._server(req, server_id)
            s.tags = [str(t) for t in tags]
            return 200, {}, {"tags": list(s.tags)}

    def list_interfaces(self, req: Request, server_id: str):
        with self.state.lock:
            s = self._server(req, server_id)
            return (
                200,
                {},
                {
                    "interfaceAttachments": [
                        {
                            "port_id": p["id"],
                            "mac_addr": p["mac"],
                            "port_state": "ACTIVE",
                            "fixed_ips": [{"ip_address": p["ip"]}],
                        }
                        for p in s.ports
                    ]
                },
            )

    # quotas
    def limits(self, req: Request):
        with self.state.lock:
            quota, used = self.state.quota(req.ctx.project_id), self.state.usage(req.ctx.project_id)
        absolute = {
            "maxTotalInstances": quota["instances"],
            "maxTotalCores": quota["cores"],
            "maxTotalRAMSize": quota["ram"],
            "maxServerGroups": quota["server_groups"],
            "maxServerGroupMembers": quota["server_group_members"],
            "totalInstancesUsed": used["instances"],
            "totalCoresUsed": used["cores"],
            "totalRAMUsed": used["ram"],
            "totalServerGroupsUsed": used["server_groups"],
        }
        return 200, {}, {"limits": {"rate": [], "absolute": absolute}}

    def _quota_project(self, req: Request, project_id: str) -> str:
        if not req.ctx.is_admin and project_id != req.ctx.project_id:
            raise ApiError(403, "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.")
        return project_id

    def get_quotas(self, req: Request, project_id: str):
        with self.state.lock:
            quota = self.state.quota(self._quota_project(req, project_id))
        return 200, {}, {"quota_set": {"id": project_id, **quota}}

    def update_quotas(self, req: Request, project_id: str):
        req.ctx.require("os_compute_api:os-quota-sets:update", roles=("admin",))
        changes = req.member("quota_set")
        for key, value in changes.items():
            if key not in DEFAULT_QUOTAS or not isinstance(value, int) or value < -1:
                raise invalid(key, value, f"{key!r}: {value!r} is not a known quota with an integer of -1 or more")
        with self.state.lock:
            self.state.quotas.setdefault(project_id, {}).update(changes)
            quota = self.state.quota(project_id)
        return 200, {}, {"quota_set": quota}

    def _check_quota(self, project_id: str, requested: dict[str, int]) -> None:
        """Nova's refusal of a request over quota (state locked by the caller); -1 is unlimited."""
        quota, used = self.state.quota(project_id), self.state.usage(project_id)
        for key, amount in requested.items():
            if quota[key] != -1 and used[key] + amount > quota[key]:
                if key == "server_groups":
                    raise ApiError(403, "Quota exceeded, too many server groups.")
                raise ApiError(
                    403,
                    f"Quota exceeded for {key}: Requested {amount}, but already used {used[key]} of {quota[key]} {key}",
                )


# --- image (Glance v2) -----------------------------------------------------------------------------

IMAGE_ROUTES: list[Route] = [
    ("GET", r"/", "versions"),  # version discovery (openstacksdk, 300)
    ("GET", r"/versions", "versions"),  # the same, 200
    ("GET", r"/v2/images", "list_images"),  # provider: image_name -> id (?name=)
    ("GET", r"/v2/images/([^/]+)", "get_image"),  # provider Read: image_name by id
    ("PATCH", r"/v2/images/([^/]+)", "patch_image"),  # day 2 "image renamed" (owner, admin)
    ("DELETE", r"/v2/images/([^/]+)", "delete_image"),  # day 2 "image deleted" (owner, admin)
]


def visible_images(state: State, ctx: Context | None) -> list[dict[str, Any]]:
    return [
        i
        for i in state.images.values()
        if i["visibility"] in ("public", "community") or (ctx and (ctx.is_admin or i["owner"] == ctx.project_id))
    ]


class Image:
    def __init__(self, state: State, keystone: Keystone):
        self.state, self.keystone = state, keystone

    def handle(self, req: Request) -> tuple[int, dict[str, str], Any]:
        try:
            if req.path not in ("/", "/versions"):
                req.auth = self.keystone.validate(req.headers.get("X-Auth-Token"))
            return dispatch(self, IMAGE_ROUTES, req)
        except ApiError as err:
            title = {
                400: "Bad Request",
                401: "Unauthorized",
                403: "Forbidden",
                404: "Not Found",
                405: "Method Not Allowed",
                409: "Conflict",
            }.get(err.status, "Error")
            text = f"{err.status} {title}\n\n{err.message}\n\n   "
            return err.status, {"Content-Type": "text/plain; charset=UTF-8", **err.headers}, text

    def versions(self, req: Request):
        docs = [
            {
                "id": f"v2.{n}",
                "status": "CURRENT" if n == 17 else "SUPPORTED",
                "links": [{"rel": "self", "href": f"{req.base}/v2/"}],
            }
            for n in (17, 16, 15)
        ]
        return (300 if req.path == "/" else 200), {}, {"versions": docs}

    def _image(self, req: Request, image_id: str) -> dict[str, Any]:
        for image in visible_images(self.state, req.ctx):
            if image["id"] == image_id:
                return image
        raise ApiError(404, f"No image found with ID {image_id}")

    def list_images(self, req: Request):
        filters = {k: req.arg(k) for k in ("name", "visibility", "status", "owner") if req.arg(k)}
        limit = int(req.arg("limit") or 25)
        marker = req.arg("marker")
        with self.state.lock:
            images = sorted(
                (i for i in visible_images(self.state, req.ctx) if all(str(i.get(k)) == v for k, v in filters.items())),
                key=lambda i: (i["created_at"], i["id"]),
                reverse=True,
            )
            if marker:
                ids = [i["id"] for i in images]
                if marker not in ids:
                    raise ApiError(400, f"Invalid marker {marker}. Image could not be found.")
                images = images[ids.index(marker) + 1 :]
            page = images[:limit]
            body: dict[str, Any] = {
                "images": [dict(i) for i in page],
                "first": "/v2/images",
                "schema": "/v2/schemas/images",
            }
            if len(images) > limit:
                query = urllib.parse.urlencode({**filters, "limit": limit, "marker": page[-1]["id"]})
                body["next"] = f"/v2/images?{query}"
            return 200, {}, body

    def get_image(self, req: Request, image_id: str):
        with self.state.lock:
            return 200, {}, dict(self._image(req, image_id))

    def _owned(self, req: Request, image: dict[str, Any], action: str) -> None:
        if not (req.ctx.is_admin or image["owner"] == req.ctx.project_id):
            raise ApiError(403, f"You are not authorized to complete {action} action.")

    def patch_image(self, req: Request, image_id: str):
        ops = req.json()
        if not isinstance(ops, list):
            raise ApiError(400, "Unable to find '{' in JSON Schema change")
        with self.state.lock:
            image = self._image(req, image_id)
            self._owned(req, image, "modify_image")
            for op in ops:
                key = str(op.get("path", "")).lstrip("/")
                if (
                    op.get("op") in ("replace", "add")
                    and key in ("name", "visibility", "protected", "tags")
                    or op.get("op") == "add"
                    and key not in image
                ):
                    image[key] = op.get("value")
                elif op.get("op") == "remove" and key in image and key not in ("id", "status", "owner"):
                    del image[key]
                else:
                    raise ApiError(403, f"Attribute '{key}' is read-only.")
            image["updated_at"] = now()
            return 200, {}, dict(image)

    def delete_image(self, req: Request, image_id: str):
        with self.state.lock:
            image = self._image(req, image_id)
            self._owned(req, image, "delete_image")
            if image["protected"]:
                raise ApiError(403, f"Image {image_id} is protected and cannot be deleted.")
            del self.state.images[image_id]
        return 204, {}, None


def start(
    state: State,
    keystone: Keystone,
    neutron: Neutron,
    compute_port: int,
    image_port: int,
    hypervisor: Hypervisor | None = None,
) -> Callable[[], None]:
    """Serve compute and image on loopback; returns the function that stops both."""
    servers = [
        serve(Compute(state, keystone, neutron, hypervisor), compute_port),
        serve(Image(state, keystone), image_port),
    ]

    def stop() -> None:
        for server in servers:
            server.shutdown()
            server.server_close()

    return stop
