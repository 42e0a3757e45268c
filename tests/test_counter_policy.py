"""sg.Counter: a shared counter that is a policy of kind "counter" in the store's
directory (store.counter(name) is the same object); its adds are exact across real
processes (fork and spawn), and its hot method is the compiled one, bound."""

from __future__ import annotations

import pickle

import pytest
from conftest import run_procs, unique_name

import sluicegate as sg

ADDS = 10_000
PROCS = 4


def test_a_counter_is_listed_in_the_directory_with_no_options(store):
    name = unique_name("hits")
    c = sg.Counter(name, store=store)
    info = {(p.kind, p.name): p for p in store.policies()}[("counter", name)]
    assert info.config == {} and info.code == {} and info.override is None
    assert store.policy(name).value == c.value == 0  # built from the directory: the same counter


def test_store_counter_is_the_same_kind_of_object_over_the_same_word(store):
    name = unique_name("hits")
    a, b = sg.Counter(name, store), store.counter(name)
    assert type(a) is type(b) is sg.Counter
    assert a.add(3) == 3 and b.add(2) == 5 and a.value == b.value == 5
    assert [p.name for p in store.policies()].count(name) == 1


def test_add_value_compare_and_set_reset(store):
    c = store.counter(unique_name("c"))
    assert c.add() == 1 and c.add(-5) == -4 and c.value == -4
    assert not c.compare_and_set(0, 7) and c.compare_and_set(-4, 7) and c.value == 7
    assert c.reset() == 7 and c.value == 0
    assert c.stats() == {"kind": "counter", "name": c.name, "value": 0}


def test_add_is_the_engines_compiled_method_bound(store):
    c = store.counter(unique_name("c"))
    assert c.add.__self__ is c._core and c.add.__func__ is type(c._core).add  # no Python frame between


def test_a_counter_has_no_options(store):
    c = store.counter(unique_name("c"))
    with pytest.raises(sg.ConfigError, match="unknown counter option"):
        c.reconfigure(limit=3)
    c.reconfigure()  # nothing to clear: no error
    assert c.config == {}
    with pytest.raises(sg.ConfigError, match="non-empty str"):
        sg.Counter("", store=store)


def test_a_counter_pickles_to_the_same_counter(store):
    c = store.counter(unique_name("c"))
    c.add(4)
    d = pickle.loads(pickle.dumps(c))
    assert isinstance(d, sg.Counter) and d.name == c.name and d.add(1) == 5


def test_use_after_close_raises_store_closed(store_name):
    s = sg.SharedStore(store_name, capacity=1024)
    c = s.counter("x")
    s.close()
    for op in (lambda: c.add(1), lambda: c.value, lambda: c.compare_and_set(0, 1), c.reset):
        with pytest.raises(sg.StoreClosed):
            op()
    assert "closed" in repr(c)


def adder(store_name: str, name: str, n: int) -> None:
    store = sg.SharedStore(store_name)
    c = sg.Counter(name, store=store)
    add = c.add
    for _ in range(n):
        add(1)
    store.close()


def test_adds_are_exact_across_processes(store, store_name, mp_ctx):
    name = unique_name("hits")
    c = sg.Counter(name, store=store)
    run_procs(mp_ctx, adder, [(store_name, name, ADDS)] * PROCS)
    assert c.value == PROCS * ADDS
