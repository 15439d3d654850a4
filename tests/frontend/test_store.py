"""The store in both dialects (SQLite, PostgreSQL): versioned migrations, keys by hash and prefix,
prices, the usage ledger, and several stores sharing one database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from frontend.auth.keys import create_key, ensure_operator_key, find_key
from frontend.auth.scopes import IMAGES, SCOPES
from frontend.store import Store, connect
from frontend.store.accounts import Account
from frontend.store.ledger import UsageRecord
from frontend.store.plans import Price
from frontend.store.schema import LATEST

OPERATOR_KEY = "sk-operator-0123456789abcdef0123"
NEW_OPERATOR_KEY = "sk-operator-fedcba9876543210fedc"


@pytest.fixture
def store(store_location: str) -> Iterator[Store]:
    opened = asyncio.run(connect(store_location))
    yield opened
    opened.close()


def schema_versions(store: Store) -> list[int]:
    rows = asyncio.run(
        store.database.transact(lambda tx: tx.fetchall("SELECT version FROM schema_migrations ORDER BY 1"))
    )
    return [version for (version,) in rows]


def test_a_new_store_gets_every_migration_once(store: Store) -> None:
    assert asyncio.run(store.database.migrate()) == []
    assert schema_versions(store) == list(range(1, LATEST + 1))


def test_frontends_starting_together_migrate_the_database_once(store_location: str) -> None:
    with ThreadPoolExecutor(4) as starting:
        stores = list(starting.map(lambda _: asyncio.run(connect(store_location)), range(4)))
    try:
        assert schema_versions(stores[0]) == list(range(1, LATEST + 1))
    finally:
        for store in stores:
            store.close()


def test_a_store_newer_than_the_code_is_refused(store: Store, store_location: str) -> None:
    sql = "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)"
    asyncio.run(store.database.transact(lambda tx: tx.execute(sql, (LATEST + 1,))))
    with pytest.raises(ValueError, match="newer than this code"):
        asyncio.run(connect(store_location))


def test_a_key_made_through_one_store_is_found_and_revoked_through_another(store: Store, store_location: str) -> None:
    other = asyncio.run(connect(store_location))
    try:
        key, secret = asyncio.run(create_key(store, {IMAGES}, "studio", "ci"))
        assert asyncio.run(find_key(other, secret)) == key
        assert asyncio.run(other.keys.revoke(key.id))
        assert asyncio.run(find_key(store, secret)) is None
    finally:
        other.close()


def test_a_key_is_found_by_its_secret_until_revoked(store: Store) -> None:
    key, secret = asyncio.run(create_key(store, {IMAGES}, "studio", "ci"))
    assert asyncio.run(find_key(store, secret)) == key
    assert asyncio.run(find_key(store, secret[:-1] + "x")) is None
    assert asyncio.run(store.keys.revoke(key.id))
    assert asyncio.run(find_key(store, secret)) is None
    assert not asyncio.run(store.keys.revoke(key.id))


def test_a_key_needs_an_existing_plan(store: Store) -> None:
    with pytest.raises(ValueError, match="no plan 'gold'"):
        asyncio.run(create_key(store, {IMAGES}, "gold"))


def test_the_operator_key_is_stored_once_with_every_scope(store: Store) -> None:
    assert asyncio.run(ensure_operator_key(store, OPERATOR_KEY)) == []
    assert asyncio.run(ensure_operator_key(store, OPERATOR_KEY)) == []
    [key] = asyncio.run(store.keys.all())
    assert (key.scopes, key.plan, key.prefix) == (SCOPES, "studio", OPERATOR_KEY[:14])


def test_a_new_operator_key_revokes_the_earlier_ones_and_no_other_key(store: Store) -> None:
    other, _ = asyncio.run(create_key(store, {IMAGES}, "studio", "ci"))
    asyncio.run(ensure_operator_key(store, OPERATOR_KEY))
    [first] = [key for key in asyncio.run(store.keys.all()) if key.name == "operator"]
    assert asyncio.run(ensure_operator_key(store, NEW_OPERATOR_KEY)) == [first.id]
    second = asyncio.run(find_key(store, NEW_OPERATOR_KEY))
    assert second is not None and asyncio.run(find_key(store, OPERATOR_KEY)) is None
    assert asyncio.run(ensure_operator_key(store, OPERATOR_KEY)) == []  # a revoked key stays revoked
    assert asyncio.run(find_key(store, OPERATOR_KEY)) is None
    assert {key.id for key in asyncio.run(store.keys.all()) if key.revoked_at is None} == {other.id, second.id}


def test_a_short_operator_key_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        asyncio.run(ensure_operator_key(store, "sk-short"))


def test_a_models_own_price_wins_over_the_plans_default(store: Store) -> None:
    asyncio.run(store.plans.set_price("studio", "flux-dev", Price(1.0, 0.5)))
    assert asyncio.run(store.plans.price("studio", "flux-dev")) == Price(1.0, 0.5)
    assert asyncio.run(store.plans.price("studio", "flux-schnell")) == Price(0.0, 0.25)
    assert asyncio.run(store.plans.price("free", "flux-schnell")) is None


def test_a_taken_username_is_refused(store: Store) -> None:
    account = Account("acct_1", "alice", "hash", frozenset({IMAGES}), "studio", 0.0)
    asyncio.run(store.accounts.add(account))
    with pytest.raises(ValueError, match=r"(?i)refused by the store: .*unique"):
        asyncio.run(store.accounts.add(Account("acct_2", "alice", "hash", frozenset(), "free", 0.0)))


def test_usage_is_summarised_per_key(store: Store) -> None:
    key, _ = asyncio.run(create_key(store, {IMAGES}, "studio", "ci"))
    rows = [
        UsageRecord("use_1", key.id, 10.0, "flux-schnell", 2, 256, 256, 4, 1e-6, 0.5, 120.0, 200, None),
        UsageRecord("use_2", key.id, 20.0, "flux-schnell", 1, 256, 256, 4, 2e-6, 0.0, 90.0, 400, "INFERENCE_3208"),
        UsageRecord("use_3", key.id, 30.0, None, None, None, None, None, 0.0, 0.0, 1.0, 400, "VALIDATION_4002"),
    ]
    for row in rows:
        asyncio.run(store.ledger.record(row))
    [summary] = asyncio.run(store.ledger.summary())
    assert (summary.principal, summary.name, summary.requests, summary.failed, summary.images) == (
        key.id,
        "ci",
        3,
        2,
        2,
    )
    assert summary.energy_kwh == pytest.approx(3e-6)
    assert summary.credits == 0.5
    assert summary.errors == {"INFERENCE_3208": 1, "VALIDATION_4002": 1}
    [recent] = asyncio.run(store.ledger.summary(since=25.0))
    assert (recent.requests, recent.errors) == (1, {"VALIDATION_4002": 1})
