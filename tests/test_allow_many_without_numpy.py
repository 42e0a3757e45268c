"""numpy is optional: importing sluicegate never imports it, and allow_many answers with a
compact sequence of bools where numpy is not installed.  Run in a child interpreter that
cannot import numpy (sys.modules["numpy"] = None); .ci/run also runs this file in a venv
that has no numpy at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import sys
    sys.modules["numpy"] = None  # ImportError on `import numpy`, as when it is not installed
    import collections.abc
    import sluicegate as sg
    assert "numpy" not in sys.modules or sys.modules["numpy"] is None
    s = sg.SharedStore()
    lim = sg.RateLimiter("no-numpy", "2/minute", store=s)
    out = lim.allow_many(["a", "a", "a", "b"] + [f"k{i}" for i in range(1000)])
    assert isinstance(out, collections.abc.Sequence) and not isinstance(out, list)
    assert len(out) == 1004 and out[:4] == [True, True, False, True] and out[2] is False
    assert out.count(True) == 1003 and sum(out) == 1003 and out.tolist()[:3] == [True, True, False]
    assert lim.allow_many([]) == [] and len(lim.allow_many(iter(["z"]))) == 1
    print("ok")
""")


def test_allow_many_without_numpy_answers_a_compact_sequence_of_bools():
    r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_importing_sluicegate_does_not_import_numpy():
    r = subprocess.run([sys.executable, "-c", "import sys, sluicegate; print('numpy' in sys.modules)"],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr
