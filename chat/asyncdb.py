"""The event loop's own PostgreSQL connection, for the socket's hot statement.

Django runs every query in a thread. From the event loop that is a hop to
the process's database thread and a hop back, and while the loop fans
messages out, the thread waits for the GIL at each step of its query: under
load, the round's one statement (chat.posting) took 2.4 to 2.8 ms there,
against about 1 ms in a plain process, and the hop back another 1.3 to 1.9
(docs/performance.md). That statement is raw SQL already, so the loop runs
it itself, on an asynchronous psycopg connection: one per event loop, made
from the settings' connection parameters (the test database's, in tests),
in autocommit, kept from one round to the next, and replaced when it breaks.

Errors come out as Django's (django.db.utils), so that callers treat them as
they treat the ORM's: a lost connection is an OperationalError.
"""

import asyncio
import weakref
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg import pq, sql

from chat.sharedstate import per_loop

# As the pool's timeout (chatsite.settings): a PostgreSQL that does not answer
# fails the round instead of holding it.
CONNECT_TIMEOUT = 10
# Seconds before PostgreSQL cancels a statement of the loop's (a lock held by a
# long transaction, a server too busy to answer): its posts are refused as
# `unavailable`, for their clients to send again, instead of holding every
# later round of the process behind it. A round takes about a millisecond.
STATEMENT_TIMEOUT = 10.0


def compact(query: str) -> str:
    """`query` without its `--` comments and runs of whitespace, for a text
    that holds neither in a literal: the same statement, in fewer bytes.

    psycopg keeps its parse of a statement's text (where each parameter
    goes) for texts of up to 4,096 bytes only, and parses a longer one again
    at every run. The round's statement, with its comments and indentation,
    was 4.9 kB: its parse was a sixth of its time in psycopg.
    """
    lines = (line.split("--", 1)[0] for line in query.splitlines())
    return " ".join(" ".join(lines).split())


class LoopConnection:
    """One event loop's connection to the database `alias`, opened on first use."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self.alias = alias
        # Django's wrapper of the database, for its settings, operations and
        # errors, never its queries. Looked up once: on an event loop Django
        # keeps a wrapper per context, and makes a new one for each task of a
        # context of its own (a round of posts).
        self.database = connections[alias]
        self.connection: psycopg.AsyncConnection | None = None
        # One cursor for every statement: it keeps how it converts each
        # parameter's type, which a new cursor works out again.
        self.cursor: psycopg.AsyncCursor | None = None
        self.opening = asyncio.Lock()
        self.running = asyncio.Lock()  # a statement's rows are its caller's

    async def fetchall(self, query: str, params: dict[str, Any]) -> list[tuple]:
        """The rows of one statement, run in autocommit: its own transaction."""
        with self.database.wrap_database_errors:
            cursor = await self._open()
            connection = cursor.connection
            try:
                async with self.running:
                    await cursor.execute(query, params)
                    return await cursor.fetchall()
            except BaseException:
                # A connection left mid-statement (a cancelled round) or broken
                # is not the next round's: closed here, the next one opens
                # another. After a failed statement in autocommit it is idle.
                if connection.info.transaction_status != pq.TransactionStatus.IDLE:
                    self.close()
                raise

    async def _open(self) -> psycopg.AsyncCursor:
        async with self.opening:
            if self.connection is None or self.connection.closed:
                self.connection = await self._connect()
                self.cursor = self.connection.cursor()
            return self.cursor

    async def _connect(self) -> psycopg.AsyncConnection:
        database = self.database
        # Django's own (the test database's name in tests; prepare_threshold,
        # so that the statement is prepared on this connection as on the
        # pool's), less its cursor class, which is for synchronous connections.
        params = database.get_connection_params()
        params.pop("cursor_factory", None)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        connection = await psycopg.AsyncConnection.connect(autocommit=True, **params)
        _every.add(connection)
        timeout = sql.Literal(round(STATEMENT_TIMEOUT * 1000))
        await connection.execute(sql.SQL("SET statement_timeout = {}").format(timeout))
        # As Django does on its connections. Its time zone is not needed: the
        # statements here read and write no local times.
        role = database.settings_dict["OPTIONS"].get("assume_role")
        if role:
            await connection.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        return connection

    def close(self) -> None:
        if self.connection is not None:
            # AsyncConnection.close() only finishes the connection, and a
            # coroutine could not be awaited here while a round is cancelled.
            self.connection.pgconn.finish()
            self.connection = self.cursor = None


_connections: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per event loop
# Every psycopg connection opened and not yet collected, its loop gone or not:
# a loop that async_to_sync made and dropped leaves the registry above, and
# its connection may wait in a reference cycle for the collector.
_every: weakref.WeakSet = weakref.WeakSet()


def loop_connection() -> LoopConnection:
    """The running event loop's connection to the default database."""
    return per_loop(_connections, LoopConnection)


def close_loop_connection() -> None:
    """Close the running loop's connection, if it has one (a loop that ends:
    tests; a database that must be dropped)."""
    connection = _connections.pop(asyncio.get_running_loop(), None)
    if connection is not None:
        connection.close()


def close_all_loop_connections() -> None:
    """Close every loop's connection, the loops' own or not (a process, or a
    test run, that ends: a database with a session still open cannot be
    dropped). Not while a loop is running a statement on its connection."""
    for connection in list(_every):
        connection.pgconn.finish()
    _connections.clear()
