"""Persistent state: plans and prices, API keys, accounts and browser sessions, the usage ledger.

`Store` (repository.py) holds every query in plain SQL; `SqliteStore` (sqlite.py) is the embedded
default. A PostgreSQL store, for replicas sharing one database, implements the same `_transact`.
"""
