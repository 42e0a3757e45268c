"""sg.Retry: the delays of exponential backoff with each jitter (exactly, under an injected
sleep), which errors are retried (on, retry_if; CircuitOpen never), retry_after honoured
and refused past the deadline, the note on the error that ended the retries, sync and
async drivers and decorators, and validation."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

import sluicegate as sg


class Flaky:
    """Fails `fails` times with err, then returns "ok"."""

    def __init__(self, fails: int, err: BaseException | None = None) -> None:
        self.fails, self.err, self.calls = fails, err or OSError("down"), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.err
        return "ok"


def run(retry: sg.Retry, fn, **kw):
    slept: list[float] = []
    try:
        result = retry.run(fn, sleep=slept.append, **kw)
    except Exception as e:  # noqa: BLE001
        result = e
    return result, slept


def test_no_jitter_sleeps_the_exponential_delays_capped_at_max_backoff():
    r = sg.Retry(attempts=6, backoff=0.1, multiplier=3.0, max_backoff=2.0, jitter="none")
    result, slept = run(r, Flaky(5))
    assert result == "ok" and slept == pytest.approx([0.1, 0.3, 0.9, 2.0, 2.0])


def test_full_and_equal_jitter_stay_in_their_ranges_and_a_seed_repeats_them():
    for jitter, lo in (("full", 0.0), ("equal", 0.5)):
        r = sg.Retry(attempts=8, backoff=1.0, multiplier=2.0, max_backoff=100.0, jitter=jitter, seed=7)
        _, slept = run(r, Flaky(7))
        caps = [2.0 ** i for i in range(7)]
        assert all(lo * c <= s < c for s, c in zip(slept, caps)), (jitter, slept)
        assert run(sg.Retry(attempts=8, backoff=1.0, max_backoff=100.0, jitter=jitter, seed=7), Flaky(7))[1] == slept
    a = run(sg.Retry(attempts=8, jitter="full", seed=1), Flaky(7))[1]
    b = run(sg.Retry(attempts=8, jitter="full", seed=2), Flaky(7))[1]
    assert a != b


def test_the_last_attempt_s_error_is_raised_with_a_note():
    flaky = Flaky(10)
    result, slept = run(sg.Retry(attempts=3, jitter="none"), flaky)
    assert isinstance(result, OSError) and flaky.calls == 3 and len(slept) == 2
    if sys.version_info >= (3, 11):
        assert "not retried after try 3 of 3" in result.__notes__[-1]


@pytest.mark.parametrize("err, retry, tries", [
    (ValueError("not an OSError"), sg.Retry(attempts=5, on=(OSError,), jitter="none"), 1),
    (OSError("retried"), sg.Retry(attempts=5, on=OSError, jitter="none"), 5),
    (OSError(13, "denied"), sg.Retry(attempts=5, retry_if=lambda e: e.errno != 13, jitter="none"), 1),
    (sg.CircuitOpen("open", retry_after=0.01), sg.Retry(attempts=5, jitter="none"), 1),
    (KeyboardInterrupt(), sg.Retry(attempts=5, on=(BaseException,), jitter="none"), 1),
])
def test_which_errors_are_retried(err, retry, tries):
    flaky = Flaky(100, err)
    with pytest.raises(type(err)):
        retry.run(flaky, sleep=lambda s: None)
    assert flaky.calls == tries


def test_retry_after_is_waited_when_longer_than_the_backoff():
    err = sg.RateLimited("slow down", retry_after=0.75)
    _, slept = run(sg.Retry(attempts=3, backoff=0.1, jitter="none"), Flaky(2, err))
    assert slept == [0.75, 0.75]


def test_a_delay_past_the_deadline_ends_the_retries():
    err = sg.RateLimited("slow down", retry_after=5.0)
    flaky = Flaky(2, err)
    with sg.deadline(1.0):
        result, slept = run(sg.Retry(attempts=3, jitter="none"), flaky)
    assert result is err and slept == [] and flaky.calls == 1
    if sys.version_info >= (3, 11):
        assert "past the deadline" in err.__notes__[-1]


def test_on_retry_hears_each_retry_before_its_sleep():
    heard = []
    r = sg.Retry(attempts=3, backoff=0.5, jitter="none")
    r.run(Flaky(2), sleep=lambda s: heard.append(("sleep", s)),
          on_retry=lambda n, e, d: heard.append((n, type(e).__name__, d)))
    assert heard == [(1, "OSError", 0.5), ("sleep", 0.5), (2, "OSError", 1.0), ("sleep", 1.0)]


def test_async_driver_awaits_its_delays():
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    flaky = Flaky(2)

    async def attempt() -> str:
        return flaky()

    r = sg.Retry(attempts=3, backoff=0.2, jitter="none")
    assert asyncio.run(r.run_async(attempt, sleep=fake_sleep)) == "ok" and slept == [0.2, 0.4]


def test_decorators_and_call_keep_the_function_and_retry_it():
    r = sg.Retry(attempts=3, backoff=0.0, jitter="none")
    flaky = Flaky(2)

    @r
    def fetch(x: int) -> str:
        return f"{flaky()} {x}"

    @r
    async def afetch(x: int) -> str:
        return f"{Flaky(0)()} {x}"

    assert fetch.__name__ == "fetch" and list(inspect.signature(fetch).parameters) == ["x"]
    assert fetch(3) == "ok 3" and flaky.calls == 3
    assert inspect.iscoroutinefunction(afetch) and asyncio.run(afetch(4)) == "ok 4"
    assert r.call(Flaky(1)) == "ok"
    assert asyncio.run(r.call_async(afetch, 5)) == "ok 5"


def test_a_budget_needs_a_name_to_be_shared():
    r = sg.Retry(budget=0.2)
    with pytest.raises(sg.ConfigError, match="shared under a name"):
        r.call(Flaky(0))


@pytest.mark.parametrize("kw, match", [
    (dict(attempts=0), "attempts"), (dict(backoff=-1), "backoff"), (dict(multiplier=0.5), "multiplier"),
    (dict(backoff=5, max_backoff=1), "max_backoff"), (dict(jitter="random"), "jitter"),
    (dict(on=("OSError",)), "on"), (dict(retry_if=3), "retry_if"), (dict(budget=-0.1), "budget"),
    (dict(budget_window=0), "budget_window"), (dict(budget_floor=-1), "budget_floor"),
])
def test_bad_options_raise_config_error_naming_them(kw, match):
    with pytest.raises(sg.ConfigError, match=match):
        sg.Retry(**kw)
