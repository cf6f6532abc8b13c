"""Rounds of posts (chat.posting), and other work of the event loop, from synchronous tests."""

from asgiref.sync import async_to_sync

from chat import services
from chat.asyncdb import LoopConnection, close_loop_connection


def on_a_loop_of_its_own(coroutine_function):
    """`coroutine_function` made callable from synchronous code, as
    async_to_sync makes it: each call on an event loop of its own, whose
    database connection (chat.asyncdb) ends with it. Its database-thread
    work runs in the caller's thread (and connection)."""

    async def run(*args, **kwargs):
        try:
            return await coroutine_function(*args, **kwargs)
        finally:
            close_loop_connection()

    return async_to_sync(run)


# services.amessage_insert_many(posts), looked up at each call (tests may wrap it).
insert_round = on_a_loop_of_its_own(lambda posts: services.amessage_insert_many(posts))


def record_loop_statements(monkeypatch) -> list[dict]:
    """The parameters of each statement run on an event loop's connection
    (chat.asyncdb), recorded as it runs."""
    statements: list[dict] = []
    fetchall = LoopConnection.fetchall

    async def recording_fetchall(self, query, params):
        statements.append(params)
        return await fetchall(self, query, params)

    monkeypatch.setattr(LoopConnection, "fetchall", recording_fetchall)
    return statements
