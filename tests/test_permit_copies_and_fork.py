"""A Permit is a handle on one holder record: copying gives the same handle (two handles
would free the record twice), pickling reproduces it (in another process it frees
nothing), and a permit inherited through fork is the parent's, never the child's."""

from __future__ import annotations

import copy
import os
import pickle

import pytest

import sluicegate as sg
from sluicegate import _procident as pi


def test_copies_are_the_permit_itself(store):
    cap = sg.ConcurrencyLimiter("pc-copy", limit=2, store=store)
    p = cap.acquire()
    assert copy.copy(p) is p and copy.deepcopy(p) is p
    assert copy.deepcopy([p])[0] is p
    assert p.release() is True and cap.in_use == 0


def test_pickle_round_trip_reproduces_the_permit(store):
    cap = sg.ConcurrencyLimiter("pc-pickle", limit=2, store=store)
    pending = cap.slot(timeout=0.5)
    held = cap.acquire()
    for p in (pending, held):
        q = pickle.loads(pickle.dumps(p))
        assert type(q) is sg.Permit and q is not p
        assert (q.index, q.owner, q.held, repr(q)) == (p.index, p.owner, p.held, repr(p))
    assert repr(held) == f"<Permit 'pc-pickle' #{held.index} held>"
    with pickle.loads(pickle.dumps(pending)) as entered:  # a pending slot still works
        assert entered.held and cap.in_use == 2
    assert held.release() is True and cap.in_use == 0
    released = pickle.loads(pickle.dumps(held))
    assert not released.held and released.release() is False


def test_a_pickled_permit_frees_nothing_in_a_process_that_does_not_hold_it(store):
    cap = sg.ConcurrencyLimiter("pc-foreign", limit=2, store=store)
    p = cap.acquire()
    foreign = sg.Permit(cap, p.index, p.owner ^ (1 << 42))  # the same record, another pid
    assert foreign.held and foreign.release() is False
    assert p.held and cap.in_use == 1
    assert p.release() is True and cap.in_use == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_never_frees_the_parents_permit_and_frees_its_own(store):
    cap = sg.ConcurrencyLimiter("pc-fork", limit=3, store=store)
    with cap.slot():  # the parent's owner word is known (and cached) before the fork
        pass
    inherited = cap.acquire()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            ok = inherited.release() is False and cap.in_use == 1  # the parent's: not ours
            with cap.slot() as mine:
                ok = ok and mine.owner == pi.current_owner() != inherited.owner and cap.in_use == 2
            ok = ok and cap.in_use == 1
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert inherited.held and cap.in_use == 1
    assert inherited.release() is True and cap.in_use == 0
