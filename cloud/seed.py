"""What the cloud starts with: the identities and catalog, then what config/example.yaml names.

Identity and networking go through the real APIs (openstacksdk); the project's network, subnet and
router are made by the project's own member, as a user would have made them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import openstack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloud import paths
from cloud.launcher import REGION, SEED

if TYPE_CHECKING:
    from cloud.launcher import Launcher


def connect(launcher: Launcher, admin: bool) -> openstack.connection.Connection:
    auth = launcher.clouds(admin)["clouds"]
    (cloud,) = auth.values()
    return openstack.connect(
        load_yaml_config=False,
        load_envvars=False,
        region_name=REGION,
        interface="public",
        identity_api_version="3",
        **cloud["auth"],
    )


def identity(launcher: Launcher) -> dict[str, Any]:
    conn = connect(launcher, admin=True)
    idn = conn.identity
    roles = {r.name: r for r in idn.roles()}
    service = idn.create_project(name="service", domain_id="default")
    for name in ("neutron", "nova"):
        user = idn.create_user(
            name=name, password=launcher.passwords[name], domain_id="default", default_project_id=service.id
        )
        for role in ("admin", "service"):
            idn.assign_project_role_to_user(service, user, roles[role])
    demo = idn.create_project(name=SEED["project"], domain_id="default")
    other = idn.create_project(name=SEED["other_project"], domain_id="default")
    user = idn.create_user(
        name=SEED["user"], password=launcher.passwords["demo"], domain_id="default", default_project_id=demo.id
    )
    idn.assign_project_role_to_user(demo, user, roles["member"])
    for kind, name, svc in (
        ("network", "neutron", launcher.neutron),
        ("compute", "nova", launcher.compute),
        ("image", "glance", launcher.image),
    ):
        entry = idn.create_service(type=kind, name=name, is_enabled=True)
        url = f"{svc.url}/v2.1" if kind == "compute" else svc.url
        for interface in ("public", "internal", "admin"):
            idn.create_endpoint(service_id=entry.id, interface=interface, url=url, region_id=REGION)
    admin_project = conn.current_project_id
    conn.close()
    return {"demo": demo.id, "other": other.id, "demo_user": user.id, "admin_project": admin_project}


def network(launcher: Launcher, ids: dict[str, Any]) -> None:
    admin = connect(launcher, admin=True)
    net = admin.network
    public = net.create_network(
        name=SEED["external"],
        is_router_external=True,
        provider_network_type="flat",
        provider_physical_network=SEED["external"],
    )
    net.create_subnet(
        network_id=public.id,
        name=SEED["external_subnet"],
        ip_version=4,
        cidr=SEED["external_cidr"],
        gateway_ip="203.0.113.1",
        is_dhcp_enabled=False,
    )
    shared = net.create_network(name=SEED["shared_network"], project_id=ids["other"], is_shared=True)
    net.create_subnet(
        network_id=shared.id,
        name=SEED["shared_subnet"],
        ip_version=4,
        project_id=ids["other"],
        cidr=SEED["shared_cidr"],
        gateway_ip="198.51.100.1",
    )
    admin.close()

    member = connect(launcher, admin=False).network
    demo = member.create_network(name=SEED["network"])
    subnet = member.create_subnet(
        network_id=demo.id, name=SEED["subnet"], ip_version=4, cidr=SEED["cidr"], gateway_ip=SEED["gateway"]
    )
    router = member.create_router(name=SEED["router"], external_gateway_info={"network_id": public.id})
    member.add_interface_to_router(router, subnet_id=subnet.id)


def compute(launcher: Launcher, ids: dict[str, Any]) -> None:
    """The emulation's own seeds: written into its state directly (it is the image service too)."""
    state = launcher.state
    with state.lock:
        state.add_flavor(SEED["flavor"], vcpus=4, ram=8192, disk=80, flavor_id="4")
        state.add_flavor("m1.small", vcpus=1, ram=2048, disk=20, flavor_id="2")
        state.add_image(SEED["image"], owner=ids["admin_project"])
        private = ed25519.Ed25519PrivateKey.generate()
        key = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        state.add_keypair(ids["demo_user"], SEED["key_pair"], f"{key.decode()} {SEED['key_pair']}")
    # The key pair's private half, for ssh to the booted servers (cloud.json's ssh_key); 0600 as ssh wants.
    paths.OUT.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.SSH_KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
        )
