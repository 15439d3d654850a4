"""Accounts: people who sign in from a browser. A change to one ends its sessions in the same
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frontend.store.database import Repository, words
from frontend.store.schema import Transaction


@dataclass(frozen=True)
class Account:
    """A person who signs in from a browser; like a key, it has scopes and a plan."""

    id: str
    username: str
    password_hash: str
    scopes: frozenset[str]
    plan: str
    created_at: float
    disabled_at: float | None = None
    """Set by `imagegen accounts disable`: no sign-in, no session."""


ACCOUNT_COLUMNS = "id, username, password_hash, scopes, plan, created_at, disabled_at"


class Accounts(Repository):
    async def add(self, account: Account) -> None:
        sql = f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        params = (
            account.id,
            account.username,
            account.password_hash,
            words(account.scopes),
            account.plan,
            account.created_at,
            account.disabled_at,
        )
        await self._transact(lambda tx: tx.execute(sql, params))

    async def named(self, username: str) -> Account | None:
        sql = f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = ?"
        rows = await self._transact(lambda tx: tx.fetchall(sql, (username,)))
        return account_from_row(rows[0]) if rows else None

    async def by_id(self, account_id: str) -> Account | None:
        sql = f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?"
        rows = await self._transact(lambda tx: tx.fetchall(sql, (account_id,)))
        return account_from_row(rows[0]) if rows else None

    async def all(self) -> list[Account]:
        sql = f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY username"
        return [account_from_row(row) for row in await self._transact(lambda tx: tx.fetchall(sql))]

    async def end_sessions(self, username: str) -> int | None:
        """End every session of the account; how many there were, None when there is no such account."""
        return await self._change(username, "", ())

    async def set_disabled(self, username: str, disabled_at: float | None) -> int | None:
        """Disable the account or, with None, enable it again; either ends its sessions (one that a
        sign-in racing the change made included): how many, None when there is no such account."""
        return await self._change(username, "disabled_at = ?", (disabled_at,))

    async def replace_password(self, username: str, password_hash: str) -> int | None:
        """Set a new password, ending every session opened with the old one; the sessions ended,
        None when there is no such account."""
        return await self._change(username, "password_hash = ?", (password_hash,))

    async def rehash_password(self, account_id: str, old_hash: str, new_hash: str) -> bool:
        """Replace `old_hash` by a re-hash of the same password, its sessions kept; False when the
        password changed meanwhile (`replace_password` wins)."""
        sql = "UPDATE accounts SET password_hash = ? WHERE id = ? AND password_hash = ?"
        return await self._transact(lambda tx: tx.execute(sql, (new_hash, account_id, old_hash))) == 1

    async def _change(self, username: str, assignments: str, params: Sequence[Any]) -> int | None:
        """Apply `assignments` (SQL, may be empty) to the account and end its sessions, in one transaction."""

        def work(tx: Transaction) -> int | None:
            rows = tx.fetchall("SELECT id FROM accounts WHERE username = ?", (username,))
            if not rows:
                return None
            if assignments:
                tx.execute(f"UPDATE accounts SET {assignments} WHERE id = ?", (*params, rows[0][0]))
            return tx.execute("DELETE FROM sessions WHERE account_id = ?", (rows[0][0],))

        return await self._transact(work)


def account_from_row(row: tuple[Any, ...]) -> Account:
    """An account from a row of ACCOUNT_COLUMNS."""
    account_id, username, password_hash, scopes, plan, created_at, disabled_at = row
    return Account(account_id, username, password_hash, frozenset(scopes.split()), plan, created_at, disabled_at)
