"""sg.load_config: policies declared in TOML or a dict are ordinary constructions, made
and returned by name; reload() applies a changed file in this process and in every other
process at its next decision; a bad file raises ConfigError naming file, table and key."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import textwrap

import pytest
from conftest import unique_name

import sluicegate as sg


class Resource:
    """What the pools in these files make (create = "test_load_config:Resource")."""


class AppError(Exception):
    pass


def _write(path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_toml_file_declares_stores_policies_and_pools(tmp_path, store_name):
    path = _write(tmp_path / "sluicegate.toml", f"""
        [stores.main]
        url = "shm://{store_name}"
        capacity = 1024
        policies = 64

        [limiters.api]
        rate = ["2/hour", "100/day"]
        store = "main"

        [limiters.login]
        rate = "5/minute"
        burst = 2
        store = "main"

        [breakers.payments]
        failure_threshold = 2
        reset_timeout = 60
        record = ["OSError", "test_load_config:AppError"]
        store = "main"

        [caps.postgres]
        limit = 3
        store = "main"

        [pools.db]
        create = "test_load_config:Resource"
        size = 2
        host_limit = "postgres"
        """)
    with sg.load_config(path) as cfg:
        st = cfg.stores["main"]
        assert st.name == store_name and st.capacity == 1024
        api, login = cfg.limiters["api"], cfg["login"]
        assert api.store is st and api.config["rate"] == ["2/hour", "100/day"]
        assert [api.allow("k") for _ in range(3)] == [True, True, False]
        assert login.burst == 2 and sum(login.allow("k") for _ in range(5)) == 2
        br = cfg["payments"]
        assert isinstance(br, sg.CircuitBreaker) and br.config["failure_threshold"] == 2
        for exc in (OSError, AppError):
            with pytest.raises(exc), br:
                raise exc
        assert br.state == "open"
        cap = cfg.caps["postgres"]
        assert cap.limit == 3
        pool = cfg.pools["db"]
        assert isinstance(pool, sg.Pool) and pool.name == "db" and pool.size == 2
        with pool.checkout() as r:
            assert isinstance(r, Resource) and cap.in_use == 1
        assert "db" in cfg and "nothing" not in cfg and sorted(cfg) == ["api", "db", "login", "payments", "postgres"]
        # what every other process sees: the file's configuration, as the code configuration
        seen = {(p.kind, p.name): p for p in st.policies()}
        assert seen["limiter", "api"].code["rate"] == ["2/hour", "100/day"]
        assert seen["breaker", "payments"].code["failure_threshold"] == 2
        assert seen["cap", "postgres"].code["limit"] == 3 and seen["cap", "postgres"].override is None


def test_a_dict_takes_objects_where_a_file_takes_names(store):
    made = []

    def connect() -> Resource:
        made.append(1)
        return Resource()

    cfg = sg.load_config({
        "limiters": {"api": {"rate": "2/hour", "store": store}},
        "caps": {"pg": {"limit": 1, "store": store, "drop_on": [TimeoutError, AppError]}},
        "pools": {"db": {"create": connect, "size": 1, "host_limit": "pg", "timeout": 0}},
    })
    assert cfg.limiters["api"].store is store and cfg.caps["pg"].drop_on == (TimeoutError, AppError)
    with cfg.pools["db"].checkout():
        assert made == [1] and cfg.caps["pg"].in_use == 1
    assert repr(cfg).startswith("<Config <dict>")


def test_policies_without_a_store_go_to_stores_default_else_the_store_argument(tmp_path, store, store_name):
    other = unique_name("cfgdef")
    try:
        path = _write(tmp_path / "a.toml", f"""
            [stores.default]
            url = "shm://{other}"
            [limiters.api]
            rate = "1/hour"
            """)
        assert sg.load_config(path, store=store).limiters["api"].store.name == other
        cfg = sg.load_config({"limiters": {"api": {"rate": "1/hour"}}}, store=store)
        assert cfg.limiters["api"].store is store
        cfg = sg.load_config({"limiters": {"api": {"rate": "1/hour"}, "b": {"rate": "1/hour"}}},
                             store=f"shm://{store_name}")
        assert cfg.limiters["api"].store.name == store_name
        assert cfg.limiters["api"].store is cfg.limiters["b"].store  # the URL is opened once
        assert not cfg.reload()  # and a reload finds the same store: nothing to rebuild
        cfg.close()
        assert cfg.limiters["api"].store.closed and not store.closed  # the caller's store stays open
    finally:
        sg.SharedStore.unlink(other, missing_ok=True)


def test_a_name_in_several_kinds_is_reached_through_its_table(store):
    cfg = sg.load_config({"limiters": {"x": {"rate": "1/hour"}}, "caps": {"x": {"limit": 1}}}, store=store)
    with pytest.raises(KeyError, match="several"):
        cfg["x"]
    assert isinstance(cfg.caps["x"], sg.ConcurrencyLimiter) and isinstance(cfg.limiters["x"], sg.RateLimiter)


# -- errors name the file, the table and the key --------------------------------------------------

BAD = [
    ("[limiters.api\nrate = 1\n", r"not valid TOML: .*line 1"),
    ('[limiter.api]\nrate = "1/hour"\n', r"unknown table \[limiter\]; did you mean 'limiters'"),
    ("limiters = 3\n", r"\[limiters\] must be a table of names"),
    ("[limiters]\napi = 3\n", r"\[limiters.api\] must be a table of options"),
    ('[limiters.api]\nrat = "1/hour"\n', r"\[limiters.api\] rat: unknown rate limiter option.*did you mean 'rate'"),
    ('[limiters.api]\nrate = "lots"\n', r"\[limiters.api\] rate: rate 'lots' does not parse"),
    ("[limiters.api]\nburst = 3\n", r"\[limiters.api\] rate: a rate limiter needs a rate"),
    ('[limiters.api]\nrate = "1/hour"\nalgorithm = "fixed_window"\nburst = 2\n',
     r"\[limiters.api\] burst: burst applies to the token bucket only"),
    ('[limiters.""]\nrate = "1/hour"\n', r"\[limiters.\] name must be a non-empty str"),
    ("[breakers.pay]\nfailure_threshold = 0\n", r"\[breakers.pay\] failure_threshold: failure_threshold must be"),
    ("[breakers.pay]\nthreshold = 3\n",
     r"\[breakers.pay\] threshold: unknown circuit breaker option.*did you mean 'failure_threshold'"),
    ('[breakers.pay]\nrecord = ["NoSuchError"]\n', r"\[breakers.pay\] record: 'NoSuchError' is not a builtin"),
    ('[breakers.pay]\nrecord = ["os:getcwd"]\n', r"\[breakers.pay\] record: 'os:getcwd' is not an exception class"),
    ("[caps.pg]\nlimit = 5\nadaptive = true\nmin_limit = 4\nmax_limit = 3\n",
     r"\[caps.pg\] min_limit: min_limit \(4\) must not exceed max_limit"),
    ("[caps.pg]\nlimit = 0\n", r"\[caps.pg\] limit: limit must be an int"),
    ('[limiters.api]\nrate = "1/hour"\nstore = "main"\n', r"\[limiters.api\] store: no store 'main' in \[stores\]"),
    ("[stores.main]\ncapacity = 10\n", r"\[stores.main\] url: a store needs a url"),
    ('[stores.main]\nurl = "shm://x"\nsize = 10\n', r"\[stores.main\] size: unknown store option"),
    ('[stores.main]\nurl = "memcached://x"\n[limiters.a]\nrate = "1/hour"\nstore = "main"\n',
     r"\[stores.main\] url: store URL 'memcached://x': unknown scheme"),
    ('[pools.db]\nsize = 2\n', r"\[pools.db\] create: a pool needs create"),
    ('[pools.db]\ncreate = "connect"\nsize = 2\n', r"\[pools.db\] create: write an import path 'module:name'"),
    ('[pools.db]\ncreate = "nosuchmodule_xyz:connect"\nsize = 2\n',
     r"\[pools.db\] create: cannot import 'nosuchmodule_xyz:connect': ModuleNotFoundError"),
    ('[pools.db]\ncreate = "test_load_config:Nope"\nsize = 2\n', r"\[pools.db\] create: cannot import .*Nope"),
    ('[pools.db]\ncreate = "test_load_config:Resource"\nsize = 2\nhost_limit = "pg"\n',
     r"\[pools.db\] host_limit: no cap 'pg' in \[caps\]"),
    ('[pools.db]\ncreate = "test_load_config:Resource"\nsize = 0\n', r"\[pools.db\] size: size must be an int"),
    ('[pools.db]\ncreate = "test_load_config:Resource"\nsize = 1\nmax_size = 3\n',
     r"\[pools.db\] max_size: unknown pool option"),
]


@pytest.mark.parametrize("text, match", BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_a_bad_file_names_the_file_the_table_and_the_key(tmp_path, store, text, match):
    path = tmp_path / "sluicegate.toml"
    path.write_text(text)
    with pytest.raises(sg.ConfigError, match=match) as info:
        sg.load_config(str(path), store=store)
    assert str(info.value).startswith(f"{path}: ")
    assert store.policies() == []  # nothing was made


def test_an_unreadable_file_and_a_bad_source_are_config_errors(tmp_path):
    with pytest.raises(sg.ConfigError, match=r"missing.toml: cannot read the configuration: No such file"):
        sg.load_config(tmp_path / "missing.toml")
    with pytest.raises(sg.ConfigError, match="a path to a TOML file or a dict"):
        sg.load_config(42)  # type: ignore[arg-type]


# -- reload ---------------------------------------------------------------------------------------


def _file(store_name: str, rate: str, extra: str = "") -> str:
    return f"""
        [stores.main]
        url = "shm://{store_name}"
        [limiters.api]
        rate = "{rate}"
        store = "main"
        [breakers.pay]
        failure_threshold = 3
        record = ["OSError"]
        store = "main"
        [pools.db]
        create = "test_load_config:Resource"
        size = 1
        """ + extra


def test_reload_applies_changes_in_place_adds_new_ones_and_leaves_removed_ones(tmp_path, store_name, caplog):
    path = tmp_path / "sluicegate.toml"
    _write(path, _file(store_name, "2/hour"))
    cfg = sg.load_config(str(path))
    api, br, pool = cfg.limiters["api"], cfg.breakers["pay"], cfg.pools["db"]
    assert [api.allow("a") for _ in range(3)] == [True, True, False]
    assert cfg.reload() == sg.Reloaded()  # nothing changed: nothing published
    _write(path, _file(store_name, "5/hour", '[caps.pg]\nlimit = 2\nstore = "main"\n')
           .replace("failure_threshold = 3", "failure_threshold = 4").replace('record = ["OSError"]', "")
           .replace("size = 1", "size = 2"))
    with caplog.at_level(logging.INFO, logger="sluicegate.config"):
        done = cfg.reload()
    assert done == sg.Reloaded(added=("caps.pg",), changed=("limiters.api", "breakers.pay", "pools.db"))
    assert cfg.limiters["api"] is api and api.config["rate"] == ["5/hour"]  # the same objects, followed
    assert sum(api.allow("b") for _ in range(8)) == 5
    assert cfg.breakers["pay"] is br and br.config["failure_threshold"] == 4
    assert br._init_kwargs["record"] == (Exception,)  # record removed from the file: the default again
    assert cfg.pools["db"] is pool and pool.size == 2  # the same pool, its shared options followed
    assert cfg.caps["pg"].limit == 2
    # a spawned child gets the reloaded configuration, and does not publish the old one again
    assert pickle.loads(pickle.dumps(api)).config["rate"] == ["5/hour"]
    assert {p.name: p.code for p in cfg.stores["main"].policies()}["api"]["rate"] == ["5/hour"]

    _write(path, _file(store_name, "5/hour").split("[breakers.pay]")[0])  # only the store and the limiter
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sluicegate.config"):
        done = cfg.reload()
    assert set(done.removed) == {"breakers.pay", "caps.pg", "pools.db"} and not done.changed
    assert "pay" in cfg.breakers and br.config["failure_threshold"] == 4  # left as it is
    assert any("[breakers.pay] is no longer declared" in r.getMessage() for r in caplog.records)
    cfg.close()


class OtherResource:
    """Another create function for [pools.db]."""


def test_a_pool_whose_own_options_change_is_not_rebuilt_but_its_shared_ones_apply(tmp_path, store_name, caplog):
    path = tmp_path / "sluicegate.toml"
    _write(path, _file(store_name, "2/hour"))
    cfg = sg.load_config(str(path))
    pool = cfg.pools["db"]
    _write(path, _file(store_name, "2/hour").replace("test_load_config:Resource", "test_load_config:OtherResource")
           .replace("size = 1", "size = 3"))
    with caplog.at_level(logging.WARNING, logger="sluicegate.config"):
        done = cfg.reload()
    assert done == sg.Reloaded(changed=("pools.db",), not_applied=("pools.db",))
    assert any("[pools.db] changed" in r.getMessage() and "restart" in r.getMessage() for r in caplog.records)
    assert cfg.pools["db"] is pool and pool.size == 3  # the size applies; create is this process's code
    with pool.checkout() as r:
        assert isinstance(r, Resource)
    assert cfg.reload() == sg.Reloaded(not_applied=("pools.db",))  # still not applied: restart
    cfg.close()


def test_a_bad_reload_changes_nothing(tmp_path, store_name):
    path = tmp_path / "sluicegate.toml"
    _write(path, _file(store_name, "2/hour"))
    cfg = sg.load_config(str(path))
    _write(path, _file(store_name, "5/hour", '[caps.pg]\nlimit = 0\nstore = "main"\n'))
    with pytest.raises(sg.ConfigError, match=r"\[caps.pg\] limit"):
        cfg.reload()
    assert cfg.limiters["api"].config["rate"] == ["2/hour"] and "pg" not in cfg.caps
    assert [p.code["rate"] for p in cfg.stores["main"].policies() if p.name == "api"] == [["2/hour"]]
    cfg.close()


def test_reload_from_a_new_source_and_a_dict(store):
    cfg = sg.load_config({"limiters": {"api": {"rate": "1/hour"}}}, store=store)
    assert cfg.reload() == sg.Reloaded()
    assert cfg.reload({"limiters": {"api": {"rate": "3/hour"}}}).changed == ("limiters.api",)
    assert cfg.limiters["api"].config["rate"] == ["3/hour"]


def test_reload_on_sighup_applies_the_file_and_logs_a_bad_one(tmp_path, store_name, caplog):
    path = tmp_path / "sluicegate.toml"
    _write(path, _file(store_name, "2/hour"))
    cfg = sg.load_config(str(path))
    old = signal.getsignal(signal.SIGHUP)
    try:
        cfg.reload_on(signal.SIGHUP)
        _write(path, _file(store_name, "7/hour"))
        os.kill(os.getpid(), signal.SIGHUP)
        assert cfg.limiters["api"].config["rate"] == ["7/hour"]
        path.write_text("[limiters.api\n")
        with caplog.at_level(logging.ERROR, logger="sluicegate.config"):
            os.kill(os.getpid(), signal.SIGHUP)  # logged, not raised into the interrupted code
        assert any("reload failed" in r.getMessage() for r in caplog.records)
        assert cfg.limiters["api"].config["rate"] == ["7/hour"]
    finally:
        signal.signal(signal.SIGHUP, old)
        cfg.close()


def _child(path: str, conn) -> None:
    """A worker: loads the same file, then answers (key, n) with how many of n calls it admitted."""
    cfg = sg.load_config(path)
    lim = cfg.limiters["api"]
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        key, n = msg
        conn.send((sum(lim.allow(key) for _ in range(n)), lim.config["rate"]))
    cfg.close()


def test_reload_in_one_process_is_followed_by_another_at_its_next_decision(tmp_path, store_name, mp_ctx):
    path = tmp_path / "sluicegate.toml"
    _write(path, _file(store_name, "2/hour"))
    cfg = sg.load_config(str(path))
    ours, theirs = mp_ctx.Pipe()
    child = mp_ctx.Process(target=_child, args=(str(path), theirs))
    child.start()
    try:
        assert ours.poll(60) and ours.recv() == "ready"
        ours.send(("a", 10))
        assert ours.recv() == (2, ["2/hour"])
        _write(path, _file(store_name, "5/hour"))
        assert cfg.reload().changed == ("limiters.api",)  # published here; the child reloads nothing
        ours.send(("b", 10))
        assert ours.recv() == (5, ["5/hour"])  # its next decision followed
        assert sum(cfg.limiters["api"].allow("b") for _ in range(3)) == 0  # one budget for both
        ours.send(None)
        child.join(60)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
        cfg.close()



def test_async_true_makes_an_async_pool(store):
    import asyncio

    cfg = sg.load_config({"pools": {"db": {"create": "test_load_config:Resource", "size": 1, "async": True}}},
                         store=store)
    pool = cfg.pools["db"]
    assert isinstance(pool, sg.AsyncPool)

    async def use() -> None:
        async with pool.checkout() as r:
            assert isinstance(r, Resource)
        await pool.close()

    asyncio.run(use())
    with pytest.raises(sg.ConfigError, match=r"<dict>: \[pools.db\] async: must be true or false"):
        sg.load_config({"pools": {"db": {"create": Resource, "size": 1, "async": "yes"}}}, store=store)
