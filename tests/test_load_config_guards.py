"""[guards.NAME] in a configuration file: a Guard over policies the file declares, by
name, with its shared options (timeout, retry, ...) followed by every process and
reloaded live; its own options (parts, key, fallback) checked and imported; bad names
raise ConfigError naming the file, the table and the key."""

from __future__ import annotations

import textwrap

import pytest

import sluicegate as sg


def cached_page(exc: BaseException) -> str:
    """The fallback these files name (fallback = "test_load_config_guards:cached_page")."""
    return f"cached ({exc.layer})"


def user_of(user: str, *args: object, **kwargs: object) -> str:
    return f"user:{user}"


def _write(path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


FILE = """
    [limiters.api]
    rate = "2/minute"
    [breakers.payments]
    failure_threshold = 1
    [caps.postgres]
    limit = 3
    [guards.checkout]
    limiter = "api"
    breaker = "payments"
    cap = "postgres"
    key_func = "test_load_config_guards:user_of"
    timeout = {timeout}
    retry = {{attempts = 2, backoff = 0.001}}
    retry_on = ["OSError"]
    fallback = "test_load_config_guards:cached_page"
"""


def test_a_guard_declared_in_a_file_uses_the_file_s_policies(tmp_path, store):
    cfg = sg.load_config(_write(tmp_path / "sg.toml", FILE.format(timeout=2.0)), store=store)
    g = cfg.guards["checkout"]
    assert cfg["checkout"] is g and g.limiter is cfg.limiters["api"] and g.breaker is cfg.breakers["payments"]
    assert g.cap is cfg.caps["postgres"] and g.timeout == 2.0 and g.retry.attempts == 2

    def pay(user: str) -> str:
        return f"paid {user}"

    assert g.call(pay, "ann") == "paid ann"
    assert g.call(pay, "ann") == "paid ann"
    assert g.call(pay, "ann") == "cached (limiter)"  # 2/minute for user:ann
    assert g.call(pay, "bob") == "paid bob"
    (info,) = [p for p in store.policies() if p.kind == "guard"]
    assert info.config["parts"] == {"limiter": "api", "cap": "postgres", "pool": None, "breaker": "payments",
                                    "memory": None}


def test_reloading_a_changed_timeout_applies_it_in_every_guard_object(tmp_path, store):
    path = _write(tmp_path / "sg.toml", FILE.format(timeout=2.0))
    cfg = sg.load_config(path, store=store)
    elsewhere = sg.Guard("checkout", limiter=cfg.limiters["api"], cap=cfg.caps["postgres"],
                         breaker=cfg.breakers["payments"], timeout=2.0, store=store)
    _write(tmp_path / "sg.toml", FILE.format(timeout=0.5))
    assert cfg.reload().changed == ("guards.checkout",)
    assert cfg.guards["checkout"].timeout == 0.5 and elsewhere.timeout == 0.5


@pytest.mark.parametrize("change, key, match", [
    (('breaker = "payments"', 'breaker = "payment"'), "breaker", "no breaker 'payment' in \\[breakers\\]"),
    (("timeout = 2.0", "timeout = -1"), "timeout", "timeout"),
    (("attempts = 2", "attempts = 0"), "retry", "attempts"),
    (('fallback = "test_load_config_guards:cached_page"', 'fallback = "nowhere:thing"'), "fallback", "import"),
    (("timeout = 2.0", "timeot = 2.0"), "timeot", "unknown"),
])
def test_a_bad_guard_declaration_names_the_table_and_the_key(tmp_path, store, change, key, match):
    text = FILE.format(timeout=2.0).replace(*change)
    with pytest.raises(sg.ConfigError, match=match) as ei:
        sg.load_config(_write(tmp_path / "sg.toml", text), store=store)
    assert f"[guards.checkout] {key}" in str(ei.value)
