"""The cloud on loopback (cloud/): what it starts with, what the real Neutron refuses, what the compute
emulation refuses (as Nova does), and what a boot does to Neutron. Everything goes through
openstacksdk with the written clouds.yaml, as the project's plain member unless a test says admin.
"""

from __future__ import annotations

import base64
import re
import uuid

import pytest

from cloud import handle

pytestmark = pytest.mark.cloud


@pytest.fixture(scope="module")
def cloud():
    reason = handle.missing()
    if reason:
        pytest.skip(reason)
    with handle.running_cloud() as running:
        yield running


def ok(value):
    assert not isinstance(value, handle.SdkError), value
    return value


def refused(value, status: int) -> str:
    assert isinstance(value, handle.SdkError), f"expected a {status} refusal, got {value!r}"
    assert value.status == status, value
    return value.details


def raw(cloud, method: str, path: str, body=None, microversion: str | None = None, admin: bool = False):
    """One compute call as the provider makes it: status and parsed body, refusals included."""
    code = (
        f"r = conn.compute.request({path!r}, {method!r}, json={body!r}, microversion={microversion!r})\n"
        "result = {'status': r.status_code, 'body': r.json() if r.content else None}"
    )
    return ok(cloud.sdk(code, admin=admin))


def member_port(cloud, name: str, **fields) -> dict:
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return cloud.sdk(
        f"conn.network.create_port(name={name!r}, network_id=conn.network.find_network('demo-net').id"
        f"{', ' + args if args else ''})"
    )


def b64(size: int) -> str:
    return base64.b64encode(b"x" * size).decode()


def boot(cloud, name: str, port_id: str, **extra) -> object:
    fields = {
        "name": name,
        "flavorRef": "4",
        "imageRef": cloud.sdk("conn.image.find_image('ubuntu-24.04').id"),
        "key_name": "demo-admin",
        "networks": [{"port": port_id}],
        **extra.pop("server", {}),
    }
    return raw(cloud, "POST", "/servers", {"server": fields, **extra})


# --- what it starts with -------------------------------------------------------------------------


def test_the_example_configs_network_subnet_and_router_exist_owned_by_the_member(cloud):
    got = ok(
        cloud.sdk("""
n = conn.network
net, sub, router = n.find_network('demo-net'), n.find_subnet('demo-subnet'), n.find_router('demo-router')
ext = n.get_network(router.external_gateway_info['network_id'])
ifaces = [p.fixed_ips for p in n.ports(device_id=router.id, device_owner='network:router_interface')]
result = {'project': conn.current_project_id, 'net': net.project_id, 'sub': [sub.project_id, sub.cidr,
          sub.gateway_ip, sub.network_id == net.id], 'router': router.project_id, 'ext': ext.is_router_external,
          'ext_name': ext.name, 'iface_subnets': [ip['subnet_id'] for ips in ifaces for ip in ips] == [sub.id],
          'roles': sorted(conn.session.auth.get_access(conn.session).role_names)}
""")
    )
    project = got["project"]
    assert got["net"] == got["router"] == project
    assert got["sub"] == [project, "192.0.2.0/24", "192.0.2.1", True]
    assert got["ext"] is True and got["ext_name"] == "public"
    assert got["iface_subnets"] is True
    assert "admin" not in got["roles"] and "member" in got["roles"]


def test_the_image_flavor_and_key_pair_the_example_names_exist(cloud):
    got = ok(
        cloud.sdk("""
img = conn.image.find_image('ubuntu-24.04')
fl = conn.compute.find_flavor('m1.large')
kp = conn.compute.get_keypair('demo-admin')
result = [img.name, img.status, img.visibility, fl.name, fl.vcpus, fl.ram, kp.name, kp.public_key.split()[0]]
""")
    )
    assert got == ["ubuntu-24.04", "active", "public", "m1.large", 4, 8192, "demo-admin", "ssh-ed25519"]


def test_the_catalog_names_compute_and_image_on_loopback(cloud):
    got = ok(cloud.sdk("sorted((e.interface, e.url) for e in conn.identity.endpoints())", admin=True))
    urls = [url for _, url in got]
    assert all(re.match(r"http://127\.0\.0\.1:\d+", u) for u in urls), urls
    assert f"{cloud.url('compute')}/v2.1" in urls and cloud.url("image") in urls


def test_the_member_is_not_an_admin_to_neutron(cloud):
    got = cloud.sdk(
        "conn.network.create_network(name='x', provider_network_type='flat', provider_physical_network='public')"
    )
    assert "disallowed by policy" in refused(got, 403)


# --- what the real Neutron refuses ----------------------------------------------------------------


def test_address_pairs_need_port_security(cloud):
    got = member_port(
        cloud, "no-security", port_security_enabled=False, allowed_address_pairs=[{"ip_address": "192.0.2.10"}]
    )
    assert refused(got, 409) == "Port Security must be enabled in order to have allowed address pairs on a port."
    # negative control: with port security the same pair is accepted
    port = ok(member_port(cloud, "with-security", allowed_address_pairs=[{"ip_address": "192.0.2.10"}]))
    assert port["allowed_address_pairs"] == [{"ip_address": "192.0.2.10", "mac_address": port["mac_address"]}]
    ok(cloud.sdk(f"conn.network.delete_port({port['id']!r})"))


def test_address_pairs_on_a_shared_network_of_another_project_are_forbidden(cloud):
    create = "conn.network.create_port(name='{name}', network_id=conn.network.find_network('shared-net').id{extra})"
    got = cloud.sdk(create.format(name="pair", extra=", allowed_address_pairs=[{'ip_address': '198.51.100.10'}]"))
    assert refused(got, 403) == (
        "(rule:create_port and (rule:create_port:allowed_address_pairs and "
        "(rule:create_port:allowed_address_pairs:ip_address))) is disallowed by policy"
    )
    plain = ok(cloud.sdk(create.format(name="plain", extra="")))  # negative control: a plain port is allowed
    ok(cloud.sdk(f"conn.network.delete_port({plain['id']!r})"))


def test_a_floating_ip_needs_a_router_from_the_ports_subnet(cloud):
    got = ok(
        cloud.sdk("""
n = conn.network
net = n.create_network(name='no-router-net')
sub = n.create_subnet(network_id=net.id, name='no-router-subnet', ip_version=4, cidr='192.0.2.0/24')
port = n.create_port(network_id=net.id)
result = {'port': port.id, 'subnet': sub.id, 'net': net.id, 'public': n.find_network('public').id}
""")
    )
    fip = cloud.sdk(f"conn.network.create_ip(floating_network_id={got['public']!r}, port_id={got['port']!r})")
    message = refused(fip, 404)
    assert message.startswith(f"External network {got['public']} is not reachable from subnet {got['subnet']}."), (
        message
    )
    # negative control: a port on demo-net (behind demo-router) gets one
    port = ok(member_port(cloud, "fip-ok"))
    fip = ok(cloud.sdk(f"conn.network.create_ip(floating_network_id={got['public']!r}, port_id={port['id']!r})"))
    assert fip["port_id"] == port["id"] and fip["floating_ip_address"].startswith("203.0.113.")
    ok(
        cloud.sdk(
            f"conn.network.delete_ip({fip['id']!r}); conn.network.delete_port({port['id']!r}); "
            f"conn.network.delete_port({got['port']!r}); conn.network.delete_network({got['net']!r})".replace(
                "; ", "\n"
            )
        )
    )


def test_an_address_in_use_is_refused(cloud):
    subnet = ok(cloud.sdk("conn.network.find_subnet('demo-subnet').id"))
    first = ok(member_port(cloud, "taken", fixed_ips=[{"subnet_id": subnet, "ip_address": "192.0.2.50"}]))
    again = member_port(cloud, "taken-again", fixed_ips=[{"subnet_id": subnet, "ip_address": "192.0.2.50"}])
    assert refused(again, 409) == f"IP address 192.0.2.50 already allocated in subnet {subnet}"
    ok(cloud.sdk(f"conn.network.delete_port({first['id']!r})"))


# --- the compute emulation -------------------------------------------------------------------------


def test_compute_answers_only_keystone_tokens(cloud):
    got = ok(
        cloud.sdk(f"""
import urllib.request, urllib.error
def status(token):
    req = urllib.request.Request({cloud.url("compute") + "/v2.1/flavors"!r}, headers={{'X-Auth-Token': token}})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
result = [status(''), status('not-a-token'), status(conn.auth_token)]
""")
    )
    assert got == [401, 401, 200]


def test_microversions_are_announced_and_bounded(cloud):
    got = ok(
        cloud.sdk(f"""
import json, urllib.request
doc = json.load(urllib.request.urlopen({cloud.url("compute") + "/v2.1"!r}))['version']
r = conn.compute.get('/flavors', microversion='2.200')
result = [doc['min_version'], doc['version'], r.status_code, r.json()]
""")
    )
    assert got[:3] == ["2.1", "2.96", 406]
    assert (
        got[3]["computeFault"]["message"]
        == "Version 2.200 is not supported by the API. Minimum is 2.1 and maximum is 2.96."
    )


def test_the_providers_server_group_calls_singular_policy_is_refused_then_policies_accepted(cloud):
    first = raw(cloud, "POST", "/os-server-groups", {"server_group": {"name": "g", "policy": "anti-affinity"}})
    assert first["status"] == 400
    assert "Additional properties are not allowed ('policy' was unexpected)" in first["body"]["badRequest"]["message"]
    retry = raw(cloud, "POST", "/os-server-groups", {"server_group": {"name": "g", "policies": ["anti-affinity"]}})
    assert retry["status"] == 200 and retry["body"]["server_group"]["policies"] == ["anti-affinity"]
    group_id = retry["body"]["server_group"]["id"]
    read = raw(cloud, "GET", f"/os-server-groups/{group_id}", microversion="2.64")
    assert read["body"]["server_group"]["policy"] == "anti-affinity" and "policies" not in read["body"]["server_group"]
    assert raw(cloud, "DELETE", f"/os-server-groups/{group_id}")["status"] == 204
    assert raw(cloud, "GET", f"/os-server-groups/{group_id}")["status"] == 404


def test_soft_anti_affinity_needs_microversion_2_15(cloud):
    body = {"server_group": {"name": "soft", "policies": ["soft-anti-affinity"]}}
    low = raw(cloud, "POST", "/os-server-groups", body, microversion="2.14")
    assert low["status"] == 400
    assert low["body"]["badRequest"]["message"] == (
        "Invalid input for field/attribute 0. Value: soft-anti-affinity. "
        "'soft-anti-affinity' is not one of ['anti-affinity', 'affinity']"
    )
    high = raw(cloud, "POST", "/os-server-groups", body, microversion="2.15")  # negative control
    assert high["status"] == 200 and high["body"]["server_group"]["policies"] == ["soft-anti-affinity"]
    raw(cloud, "DELETE", f"/os-server-groups/{high['body']['server_group']['id']}")


def test_a_boot_binds_the_port_in_neutron_and_a_delete_unbinds_it(cloud):
    port = ok(member_port(cloud, "node-port"))
    group = raw(cloud, "POST", "/os-server-groups", {"server_group": {"name": "nodes", "policies": ["anti-affinity"]}})
    group_id = group["body"]["server_group"]["id"]
    user_data = base64.b64encode(b"#cloud-config\n{}\n").decode()
    created = boot(
        cloud,
        "node-1",
        port["id"],
        server={"user_data": user_data, "metadata": {"role": "cp"}},
        **{"os:scheduler_hints": {"group": group_id}},
    )
    assert created["status"] == 202, created
    server_id = created["body"]["server"]["id"]
    bound = ok(cloud.sdk(f"conn.network.get_port({port['id']!r})", admin=True))
    assert (bound["device_id"], bound["device_owner"]) == (server_id, "compute:nova")
    assert bound["binding_host_id"].startswith("kha-compute-")
    again = boot(cloud, "node-2", port["id"])
    assert (
        again["status"] == 409
        and again["body"]["conflictingRequest"]["message"] == f"Port {port['id']} is still in use."
    )
    server = ok(
        cloud.sdk(
            f"""
import time
s = conn.compute.wait_for_server(conn.compute.get_server({server_id!r}), wait=30, interval=0.5)
result = conn.compute.get_server(s.id)
""",
            admin=True,
        )
    )
    assert server["status"] == "ACTIVE" and server["user_data"] == user_data
    # gophercloud (the provider) parses launched_at without a zone, as Nova writes it: a "Z" fails the wait
    view = raw(cloud, "GET", f"/servers/{server_id}")["body"]["server"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", view["OS-SRV-USG:launched_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", view["created"])
    assert server["addresses"]["demo-net"][0]["addr"] == port["fixed_ips"][0]["ip_address"]
    members = raw(cloud, "GET", f"/os-server-groups/{group_id}")["body"]["server_group"]["members"]
    assert members == [server_id]
    assert raw(cloud, "DELETE", f"/servers/{server_id}")["status"] == 204
    cleared = ok(cloud.sdk(f"conn.network.get_port({port['id']!r})", admin=True))
    assert (cleared["device_id"], cleared["device_owner"], cleared["binding_host_id"]) == ("", "", "")
    assert raw(cloud, "GET", f"/servers/{server_id}")["status"] == 404
    raw(cloud, "DELETE", f"/os-server-groups/{group_id}")
    ok(cloud.sdk(f"conn.network.delete_port({port['id']!r})"))


@pytest.mark.parametrize("size, accepted", [(49_149, True), (49_152, False)])
def test_user_data_is_limited_to_65535_bytes_of_base64(cloud, size, accepted):
    port = ok(member_port(cloud, f"ud-{size}"))
    data = b64(size)
    got = boot(cloud, "ud", port["id"], server={"user_data": data})
    if accepted:
        assert len(data) <= 65535 and got["status"] == 202, got
        raw(cloud, "DELETE", f"/servers/{got['body']['server']['id']}")
    else:
        assert len(data) > 65535 and got["status"] == 400
        message = got["body"]["badRequest"]["message"]
        assert message.startswith("Invalid input for field/attribute user_data. Value: ") and message.endswith(
            "is too long"
        )
    ok(cloud.sdk(f"conn.network.delete_port({port['id']!r})"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"server": {"flavorRef": "no-such-flavor"}}, "Invalid flavorRef provided."),
        ({"server": {"imageRef": str(uuid.UUID(int=1))}}, "Can not find requested image"),
        ({"server": {"key_name": "no-such-key"}}, "Invalid key_name provided."),
        (
            {"os:scheduler_hints": {"group": str(uuid.UUID(int=2))}},
            f"Instance group {uuid.UUID(int=2)} could not be found.",
        ),
    ],
)
def test_compute_refuses_what_nova_refuses(cloud, change, message):
    port = ok(member_port(cloud, "refused"))
    got = boot(cloud, "refused", port["id"], **change)
    assert got["status"] == 400 and got["body"]["badRequest"]["message"] == message
    unbound = ok(cloud.sdk(f"conn.network.get_port({port['id']!r})"))
    assert unbound["device_id"] == ""  # a refused boot leaves the port alone
    ok(cloud.sdk(f"conn.network.delete_port({port['id']!r})"))


def test_the_image_service_finds_images_by_name(cloud):
    got = ok(
        cloud.sdk(f"""
import json, urllib.request
def names(query):
    url = {cloud.url("image") + "/v2/images?"!r} + query
    req = urllib.request.Request(url, headers={{'X-Auth-Token': conn.auth_token}})
    return [i['name'] for i in json.load(urllib.request.urlopen(req))['images']]
result = [names('name=ubuntu-24.04'), names('name=nothing')]
""")
    )
    assert got == [["ubuntu-24.04"], []]


def test_a_new_security_group_gets_neutrons_default_egress_rules(cloud):
    # Neutron seeds these templates in a migration; the sqlite schema is built from the models, so
    # cloud/neutron_db.py replays that migration's rows. Without them every group starts empty.
    got = ok(
        cloud.sdk("""
sg = conn.network.create_security_group(name='fresh')
rules = conn.network.security_group_rules(security_group_id=sg.id)
result = sorted([r.direction, r.ether_type, r.remote_ip_prefix] for r in rules)
conn.network.delete_security_group(sg)
""")
    )
    assert got == [["egress", "IPv4", None], ["egress", "IPv6", None]]
