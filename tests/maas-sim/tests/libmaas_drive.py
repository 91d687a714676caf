"""Drives maas-sim with python-libmaas (a real MAAS client): the URL and API key come from argv.

Exits non-zero with a message on the first mismatch; prints "libmaas ok" at the end.
"""
import base64
import sys
import time

from maas.client import connect
from maas.client.enum import IPRangeType, NodeStatus


def wait(machine, status, limit=20.0):
    start = time.monotonic()
    while True:
        machine.refresh()
        if machine.status == status:
            return machine
        if time.monotonic() - start > limit:
            raise SystemExit(f"{machine.hostname} stuck in {machine.status}, wanted {status}")
        time.sleep(0.02)


def main():
    url, key = sys.argv[1], sys.argv[2]
    client = connect(url, apikey=key)
    me = client.users.whoami()
    assert me.username == "admin" and me.is_admin, me
    version = client.version.get()
    assert "authenticate-api" in version.capabilities, version

    client.maas.set_upstream_dns(["172.20.129.131", "8.8.8.8"])
    assert client.maas.get_upstream_dns() == ["172.20.129.131", "8.8.8.8"], client.maas.get_upstream_dns()

    machines = client.machines.list()
    assert sorted(m.hostname for m in machines) == ["server1", "server2", "server3", "server4"], machines
    m = client.machines.allocate(hostname="server2")
    assert m.status == NodeStatus.ALLOCATED, m.status
    user_data = b"#cloud-config\nruncmd: [echo from libmaas]\n"
    m.deploy(distro_series="jammy", user_data=user_data)
    m = wait(m, NodeStatus.DEPLOYED)
    assert m.distro_series == "jammy", m.distro_series
    assert m.memory == 16384 and m.cpus == 4, (m.memory, m.cpus)
    state = m.query_power_state()
    assert state.value == "on", state
    m.release()
    wait(m, NodeStatus.READY)

    # Creation with JSON power parameters (what libmaas sends), then commissioning to Ready.
    created = client.machines.create(
        architecture="amd64/generic",
        mac_addresses=["52:54:00:00:00:99"],
        power_type="ipmi",
        power_parameters={"power_address": "10.0.0.9", "power_pass": "x"},
        hostname="extra",
    )
    assert created.status in (NodeStatus.COMMISSIONING, NodeStatus.TESTING), created.status
    wait(created, NodeStatus.READY)

    key = "ssh-ed25519 " + base64.b64encode(
        b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + b"k" * 32
    ).decode() + " cloud@main"
    client.ssh_keys.create(key)
    assert [k.key for k in client.ssh_keys.list()] == [key]

    client.boot_resources.start_import()
    start = time.monotonic()
    while not any(r.name == "ubuntu/jammy" for r in client.boot_resources.list()):
        if time.monotonic() - start > 20:
            raise SystemExit("jammy never imported")
        time.sleep(0.05)

    subnet = client.subnets.list()[0]
    rng = client.ip_ranges.create("172.16.11.1", "172.16.14.255", type=IPRangeType.DYNAMIC, subnet=subnet)
    assert rng.type == IPRangeType.DYNAMIC, rng.type
    rack = client.rack_controllers.list()[0]
    vlan = client.fabrics.list()[0].vlans.get_default()
    vlan.dhcp_on = True
    vlan.primary_rack = rack
    vlan.save()
    assert client.fabrics.list()[0].vlans.get_default().dhcp_on

    events = client.events.query(hostnames=["server2"])
    assert any(e.event_type == "Deployed" for e in events), list(events)

    subnets = client.subnets.list()
    assert [s.cidr for s in subnets] == ["172.16.0.0/20"], subnets
    fabric = client.fabrics.list()[0]
    assert fabric.name == "fabric-0", fabric
    print("libmaas ok")


if __name__ == "__main__":
    main()
