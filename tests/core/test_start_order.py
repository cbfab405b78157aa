"""startAfter: the config errors it can have, and what the plan does with it (tables)."""

from __future__ import annotations

import dataclasses
import json

from daemon.core.config import merge, parse_text
from daemon.core.domain_plan import plan_domain
from daemon.core.keys import Key, Kind
from daemon.core.observed import DomainObservation, Power
from daemon.core.plan import Act, Phase
from daemon.core.record import Now, Record, Wanted
from daemon.core.start_order import dependents_of, order_problems
from tests.core.test_plan import D, kinds, observed

MEM = {"memory": {"amount": 1, "unit": "GiB"}}


def merged(**files):
    return merge({name: parse_text(name, json.dumps(body)) for name, body in files.items()}, {})


def test_a_name_no_file_declares_holds_the_file_that_names_it():
    state = merged(**{"web.json": {"domains": {"web": {**MEM, "startAfter": ["db"]}}}})
    assert [str(e) for e in state.errors] == ["web.json: domains.web.startAfter: names 'db', which no file declares"]
    assert "web.json" in state.broken_files or state.held("domain", "web", "web.json")


def test_a_name_in_another_file_is_fine():
    state = merged(**{"web.json": {"domains": {"web": {**MEM, "startAfter": ["db"]}}},
                      "db.json": {"domains": {"db": MEM}}})
    assert not state.errors


def test_a_cycle_across_files_is_one_error_spelling_it_out():
    state = merged(**{"a.json": {"domains": {"a": {**MEM, "startAfter": ["b"]}}},
                      "b.json": {"domains": {"b": {**MEM, "startAfter": ["c"]}, "c": {**MEM, "startAfter": ["a"]}}}})
    assert [str(e) for e in state.errors] == [
        "a.json: domains.a.startAfter: a cycle: a -> b -> c -> a (each starts after the next)"]


def test_naming_itself():
    problems = order_problems({"a": ("a.json", ["a"])})
    assert problems == [("a.json", "a", "'a' names itself")]


def test_dependents_are_the_reverse():
    assert dependents_of({"web": ["db", "cache"], "api": ["db"]}) == {"db": ("api", "web"), "cache": ("web",)}


def plan(obs, d=D, **observation):
    wanted = Wanted("vm", d, "vm.json")
    return plan_domain(wanted, DomainObservation(obs, **observation), Record(), Now(0.0, 0.0))


def test_a_start_waits_for_the_domains_it_starts_after():
    p = plan(observed(power=Power.shutoff), waiting_for=("db",))
    assert Act.start not in kinds(p) and p.phase == Phase.defined
    assert p.message == "waiting for db to run (startAfter)" and p.requeue_after == 5.0


def test_a_new_domain_is_defined_but_not_started_while_it_waits():
    p = plan(None, waiting_for=("db",))
    assert kinds(p) == [Act.define, Act.set_autostart]


def test_a_start_wakes_the_domains_waiting_for_it():
    p = plan(observed(power=Power.shutoff), wake_after=("web", "api"))
    assert kinds(p) == [Act.start] and p.wake == (Key(Kind.domain, "web"), Key(Kind.domain, "api"))
    assert plan(observed(), wake_after=("web",)).wake == ()  # already running: nothing new to wake for


def test_a_removal_waits_for_its_dependents_to_stop_first():
    wanted = Wanted("vm", None, "vm.json")
    running = DomainObservation(observed(), dependents_running=("web",), wake_after=())
    p = plan_domain(wanted, running, Record(), Now(0.0, 0.0))
    assert p.actions == () and p.phase == Phase.stopping and "waiting for web to stop first" in p.message
    free = dataclasses.replace(running, dependents_running=())
    assert Act.shutdown in kinds(plan_domain(wanted, free, Record(), Now(0.0, 0.0)))


def test_a_removed_domain_wakes_what_it_started_after_once_gone():
    wanted = Wanted("vm", None, "vm.json")
    stopped = DomainObservation(observed(power=Power.shutoff), wake_after=("db",))
    p = plan_domain(wanted, stopped, Record(), Now(0.0, 0.0))
    assert kinds(p) == [Act.undefine] and Key(Kind.domain, "db") in p.wake
