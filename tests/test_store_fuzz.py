"""Garbage in a store file never crashes the interpreter: attaching raises StoreError,
or (body garbage under a valid header) every operation either works or raises a
SluicegateError."""

from __future__ import annotations

import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sluicegate as sg

CAPACITY = 16
HEADER = 4096

_template: dict[str, bytes] = {}


def _pristine(tmp_path_factory) -> bytes:
    if "raw" not in _template:
        p = tmp_path_factory.mktemp("tpl") / "t.sg"
        with sg.SharedStore(path=p, capacity=CAPACITY) as s:
            s.counter("a").add(1)
        _template["raw"] = p.read_bytes()
    return _template["raw"]


patches = st.lists(st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=64)), min_size=1, max_size=8)
common = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@common
@given(patches=patches)
def test_garbage_over_header_raises_store_error(tmp_path_factory, patches):
    raw = bytearray(_pristine(tmp_path_factory))
    for off, data in patches:
        off %= 64  # the checksummed part of the header
        raw[off : off + len(data)] = data[: 64 - off]
    path = tmp_path_factory.mktemp("h") / "s.sg"
    path.write_bytes(bytes(raw[: len(_template["raw"])]))
    if bytes(raw[:64]) == _template["raw"][:64]:
        with sg.SharedStore(path=path) as s:
            assert s.counter("a").value == 1
        return
    try:
        sg.SharedStore(path=path).close()
    except sg.StoreError:
        pass
    else:
        raise AssertionError("a changed header was accepted")
    shutil.rmtree(path.parent)


@common
@given(patches=patches, keys=st.lists(st.text(max_size=12), min_size=1, max_size=20))
def test_garbage_over_body_never_crashes(tmp_path_factory, patches, keys):
    raw = bytearray(_pristine(tmp_path_factory))
    body = len(raw) - HEADER
    for off, data in patches:
        off = HEADER + off % body
        raw[off : off + len(data)] = data[: len(raw) - off]
    path = tmp_path_factory.mktemp("b") / "s.sg"
    path.write_bytes(bytes(raw))
    with sg.SharedStore(path=path) as s:
        for k in keys:
            try:
                c = s.counter(k)
                c.add(1)
                c.compare_and_set(c.value, 0)
            except sg.SluicegateError:
                pass
        s.stats()
    shutil.rmtree(path.parent)
