"""Static DHCP/DNS hosts change in place; anything else restarts the network.

A network is planned against what libvirt runs: the live XML's owner element
(spec hash and restart hash of the definition it was started from) and the
static hosts it serves now, read from the live XML itself.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from daemon.core.network_xml import render_network, static_hosts
from daemon.core.observed import ObservedNetwork
from daemon.core.ownership import Owner
from daemon.core.network_plan import plan_network
from daemon.core.observed import NetworkObservation
from daemon.core.plan import Act
from daemon.core.record import Now, Record, Wanted
from daemon.core.spec import Network


def net_inputs(d, obs):
    return Wanted("lab", d, "n.json"), NetworkObservation(obs), Record(), Now(0, 0)


def net(hosts=None, *, end="10.9.0.200", dns=None):
    spec = {"ip": {"address": "10.9.0.1", "prefix": 24},
            "dhcp": {"range": {"start": "10.9.0.100", "end": end}, "hosts": hosts or {}}}
    if dns:
        spec["dns"] = {"hosts": dns}
    return render_network("lab", Network.model_validate(spec), {}, source_file="n.json")


A = net({"52:54:00:00:00:01": "10.9.0.10"})


def running(started_from, *, hosts=None, defined=None):
    """libvirt's view: started from `started_from`, serving `hosts` (default: its own),
    with `defined` (default: the same) as the persistent definition."""
    defined = defined or started_from
    owner = Owner("n.json", defined.spec_hash, "fp", defined.restart_hash)
    return ObservedNetwork(name="lab", uuid=A.uuid, active=True, owner=owner, live_spec_hash=started_from.spec_hash,
                           fingerprint="fp", autostart=True, live_restart_hash=started_from.restart_hash,
                           live_hosts=started_from.hosts if hosts is None else hosts)


def kinds(plan):
    return [a.kind for a in plan.actions]


def test_a_changed_lease_is_updated_in_place():
    b = net({"52:54:00:00:00:01": "10.9.0.11", "52:54:00:00:00:02": "10.9.0.12"})
    plan = plan_network(*net_inputs(b, running(A)))
    assert kinds(plan) == [Act.define, Act.update_hosts]
    updates = plan.actions[1].updates
    assert [c for c, _ in updates] == ["delete", "add", "add"]  # deletions first: libvirt refuses clashes
    assert "10.9.0.10" in updates[0][1].xml
    assert {h.xml for _, h in updates[1:]} == {h.xml for h in b.hosts}
    assert str(plan.actions[1]) == "update-hosts(+2 -1)"


def test_the_first_dns_host_is_live_too():
    b = net({"52:54:00:00:00:01": "10.9.0.10"}, dns={"printer": "10.9.0.50"})
    plan = plan_network(*net_inputs(b, running(A)))
    assert kinds(plan) == [Act.define, Act.update_hosts]
    assert [(c, h.section) for c, h in plan.actions[1].updates] == [("add", "dns-host")]


def test_anything_else_restarts_and_reattaches():
    b = net({"52:54:00:00:00:01": "10.9.0.10"}, end="10.9.0.150")
    assert kinds(plan_network(*net_inputs(b, running(A)))) == [
        Act.define, Act.destroy, Act.start, Act.reattach_nics]


def test_after_an_update_in_place_nothing_more_happens():
    # defined as B, still running the definition it was started from (A's hash), serving B's hosts
    b = net({"52:54:00:00:00:01": "10.9.0.11"})
    assert kinds(plan_network(*net_inputs(b, running(A, hosts=b.hosts, defined=b)))) == []


def test_hosts_changed_behind_our_back_are_put_back():
    # started from A, then someone ran virsh net-update ... delete ip-dhcp-host --live
    plan = plan_network(*net_inputs(A, running(A, hosts=frozenset())))
    assert kinds(plan) == [Act.update_hosts]
    assert [c for c, _ in plan.actions[0].updates] == ["add"]
    # and after an update in place, the same
    b = net({"52:54:00:00:00:01": "10.9.0.11"})
    assert [c for c, _ in plan_network(*net_inputs(b, running(A, hosts=frozenset(), defined=b))).actions[0].updates] == ["add"]


def test_a_network_started_before_restart_hashes_existed_restarts():
    b = net({"52:54:00:00:00:01": "10.9.0.11"})
    old = running(A)
    old = ObservedNetwork(**{**{f: getattr(old, f) for f in old.__dataclass_fields__}, "live_restart_hash": None})
    assert Act.destroy in kinds(plan_network(*net_inputs(b, old)))


def test_libvirts_attribute_order_does_not_matter():
    ours = ET.fromstring(A.xml)
    theirs = ET.fromstring(
        "<network><ip address='10.9.0.1' prefix='24'><dhcp><range start='10.9.0.100' end='10.9.0.200'/>"
        "<host mac='52:54:00:00:00:01' ip='10.9.0.10'/></dhcp></ip></network>")
    assert static_hosts(theirs) == static_hosts(ours) == A.hosts
