"""Browser sessions, stored by the hash of their token; an account's changes end them (accounts.py)."""

from __future__ import annotations

import time

from frontend.store.accounts import ACCOUNT_COLUMNS, Account, account_from_row
from frontend.store.database import Repository
from frontend.store.schema import Transaction


class Sessions(Repository):
    async def add(self, token_hash: str, account_id: str, expires_at: float) -> None:
        """Record a new session, dropping the expired ones of every account on the way."""

        def work(tx: Transaction) -> None:
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?", (time.time(),))
            tx.execute(
                "INSERT INTO sessions (token_hash, account_id, expires_at) VALUES (?, ?, ?)",
                (token_hash, account_id, expires_at),
            )

        await self._transact(work)

    async def account(self, token_hash: str, now: float) -> Account | None:
        """The account of an unexpired session, unless the account is disabled."""
        sql = (
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE disabled_at IS NULL AND id = "
            "(SELECT account_id FROM sessions WHERE token_hash = ? AND expires_at > ?)"
        )
        rows = await self._transact(lambda tx: tx.fetchall(sql, (token_hash, now)))
        return account_from_row(rows[0]) if rows else None

    async def delete(self, token_hash: str) -> None:
        await self._transact(lambda tx: tx.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)))
