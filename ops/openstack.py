"""The cloud as Terraform's provider finds it: OS_CLOUD and a clouds.yaml, a Keystone v3 token, the
service catalog, and read-only GETs on Neutron, Nova and Glance. Standard library only: preflight
needs a few lists and lookups, not an SDK.

clouds.yaml is looked for where the provider (gophercloud) looks: OS_CLIENT_CONFIG_FILE, then the
current directory, ~/.config/openstack and /etc/openstack; Terraform runs in the stack's folder
(cdktf.out/stacks/<cluster>), so that folder stands in for the current directory. Without OS_CLOUD,
the OS_* variables (OS_AUTH_URL, OS_USERNAME, ...) describe the cloud, as they do for the provider.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TIMEOUT_S = 30.0
# Nova microversion for the calls preflight makes: server groups' `policy`, limits' server-group fields.
COMPUTE_MICROVERSION = "2.64"


class CloudError(Exception):
    """The cloud cannot be read at all (no clouds.yaml entry, no answer, refused credentials); one line."""


class ApiError(Exception):
    """One API call answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


def clouds_yaml_candidates(env: Mapping[str, str], cwd: Path) -> list[Path]:
    if env.get("OS_CLIENT_CONFIG_FILE"):
        return [Path(env["OS_CLIENT_CONFIG_FILE"])]
    home = Path(env.get("HOME", str(Path.home())))
    return [cwd / "clouds.yaml", home / ".config" / "openstack" / "clouds.yaml", Path("/etc/openstack/clouds.yaml")]


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    keys = {
        "auth_url": "OS_AUTH_URL",
        "username": "OS_USERNAME",
        "user_id": "OS_USER_ID",
        "password": "OS_PASSWORD",
        "project_name": "OS_PROJECT_NAME",
        "project_id": "OS_PROJECT_ID",
        "user_domain_name": "OS_USER_DOMAIN_NAME",
        "user_domain_id": "OS_USER_DOMAIN_ID",
        "project_domain_name": "OS_PROJECT_DOMAIN_NAME",
        "project_domain_id": "OS_PROJECT_DOMAIN_ID",
        "application_credential_id": "OS_APPLICATION_CREDENTIAL_ID",
        "application_credential_name": "OS_APPLICATION_CREDENTIAL_NAME",
        "application_credential_secret": "OS_APPLICATION_CREDENTIAL_SECRET",
    }
    auth = {k: env[v] for k, v in keys.items() if env.get(v)}
    return {
        "auth": auth,
        "region_name": env.get("OS_REGION_NAME"),
        "interface": env.get("OS_INTERFACE", "public"),
        "auth_type": env.get("OS_AUTH_TYPE"),
    }


def cloud_settings(env: Mapping[str, str], cwd: Path) -> tuple[str, dict[str, Any]]:
    """(where the settings came from, the cloud's entry) as the provider would resolve them."""
    name = env.get("OS_CLOUD")
    if not name:
        if env.get("OS_AUTH_URL"):
            return "the OS_* environment variables", _from_env(env)
        raise CloudError("OS_CLOUD: not set — name your clouds.yaml entry (e.g. OS_CLOUD=mycloud), as for cdktf deploy")
    given = env.get("OS_CLIENT_CONFIG_FILE")
    if given and not Path(given).is_absolute():
        raise CloudError(
            f"OS_CLIENT_CONFIG_FILE: {given} — a relative path; Terraform runs in {cwd}, where it does not resolve: "
            f"make it absolute, e.g. OS_CLIENT_CONFIG_FILE=$PWD/{given}"
        )
    candidates = clouds_yaml_candidates(env, cwd)
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise CloudError(f"no clouds.yaml found; looked at {', '.join(map(str, candidates))} (OS_CLIENT_CONFIG_FILE)")
    path = found[0]
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CloudError(f"{path}: not readable as YAML ({err})") from None
    clouds = doc.get("clouds") or {}
    if name not in clouds:
        raise CloudError(f"OS_CLOUD: {name} — no such cloud in {path} (it has: {', '.join(clouds) or 'none'})")
    entry = dict(clouds[name])
    secure = path.with_name("secure.yaml")
    if secure.is_file():
        extra = ((yaml.safe_load(secure.read_text()) or {}).get("clouds") or {}).get(name) or {}
        entry["auth"] = {**(entry.get("auth") or {}), **(extra.get("auth") or {})}
    return f"{path} (cloud {name})", entry


def _request(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None) -> tuple[Any, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            raw = resp.read()
            return resp.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raise ApiError(err.code, _error_text(err.read())) from None


def _error_text(raw: bytes) -> str:
    """The message an OpenStack service put in its error body, whatever the service's format."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return " ".join(raw.decode(errors="replace").split())[:300]
    if isinstance(doc, dict):
        for value in doc.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])
        if "NeutronError" in doc:
            return str(doc["NeutronError"].get("message"))
    return json.dumps(doc)[:300]


def _identity(auth: Mapping[str, Any], auth_type: str | None) -> dict[str, Any]:
    if auth_type == "v3applicationcredential" or "application_credential_secret" in auth:
        cred: dict[str, Any] = {"secret": auth.get("application_credential_secret")}
        if auth.get("application_credential_id"):
            cred["id"] = auth["application_credential_id"]
        else:
            cred["name"] = auth.get("application_credential_name")
            cred["user"] = _user(auth)
        return {"methods": ["application_credential"], "application_credential": cred}
    return {"methods": ["password"], "password": {"user": {**_user(auth), "password": auth.get("password")}}}


def _user(auth: Mapping[str, Any]) -> dict[str, Any]:
    if auth.get("user_id"):
        return {"id": auth["user_id"]}
    domain = auth.get("user_domain_id") or auth.get("domain_id")
    return {
        "name": auth.get("username"),
        "domain": {"id": domain} if domain else {"name": auth.get("user_domain_name") or auth.get("domain_name")},
    }


def _scope(auth: Mapping[str, Any]) -> dict[str, Any] | None:
    if auth.get("project_id"):
        return {"project": {"id": auth["project_id"]}}
    if auth.get("project_name"):
        domain = auth.get("project_domain_id") or auth.get("domain_id")
        return {
            "project": {
                "name": auth["project_name"],
                "domain": {"id": domain}
                if domain
                else {"name": auth.get("project_domain_name") or auth.get("domain_name")},
            }
        }
    return None


@dataclass
class Session:
    """A project-scoped token and the endpoints of the services preflight reads."""

    token: str
    project_id: str
    roles: frozenset[str]
    endpoints: dict[str, str]  # service type -> URL

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def has(self, service: str) -> bool:
        return service in self.endpoints

    def get(self, service: str, path: str, **params: str) -> Any:
        if service not in self.endpoints:
            raise ApiError(404, f"the catalog has no {service} endpoint")
        base = self.endpoints[service].rstrip("/")
        if service == "network" and not base.endswith("/v2.0"):
            base += "/v2.0"
        if service == "image" and not base.endswith("/v2"):
            base += "/v2"
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        headers = {"X-Auth-Token": self.token}
        if service == "compute":
            headers["OpenStack-API-Version"] = f"compute {COMPUTE_MICROVERSION}"
        return _request("GET", f"{base}{path}{query}", headers=headers)[1]


def connect(env: Mapping[str, str], cwd: Path) -> tuple[str, Session]:
    """(where the settings came from, a session); a CloudError names what is missing or refused."""
    source, entry = cloud_settings(env, cwd)
    auth = entry.get("auth") or {}
    url = str(auth.get("auth_url") or "").rstrip("/")
    if not url:
        raise CloudError(f"{source}: no auth.auth_url")
    if not url.endswith("/v3"):
        url += "/v3"
    body: dict[str, Any] = {"auth": {"identity": _identity(auth, entry.get("auth_type"))}}
    if (scope := _scope(auth)) is not None:
        body["auth"]["scope"] = scope
    try:
        headers, doc = _request("POST", f"{url}/auth/tokens", body)
    except ApiError as err:
        raise CloudError(f"Keystone at {url} refused the credentials from {source}: {err}") from None
    except (urllib.error.URLError, OSError) as err:
        raise CloudError(f"Keystone at {url} (from {source}) does not answer: {err}") from None
    token = doc["token"]
    region = entry.get("region_name")
    interface = str(entry.get("interface") or "public").removesuffix("URL")
    endpoints: dict[str, str] = {}
    for service in token.get("catalog", []):
        for ep in service.get("endpoints", []):
            if ep.get("interface") == interface and (not region or ep.get("region_id", ep.get("region")) == region):
                endpoints.setdefault(service["type"], ep["url"])
    project = (token.get("project") or {}).get("id")
    if not project:
        raise CloudError(f"{source}: the token is not scoped to a project (set auth.project_name or project_id)")
    return source, Session(
        token=headers["X-Subject-Token"],
        project_id=project,
        roles=frozenset(r["name"] for r in token.get("roles", [])),
        endpoints=endpoints,
    )


def environment() -> dict[str, str]:
    return dict(os.environ)
