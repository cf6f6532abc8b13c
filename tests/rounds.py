"""A round of posts as a socket's turn sends it (chat.posting), from a test."""

from asgiref.sync import async_to_sync

from chat import services
from chat.asyncdb import LoopConnection, close_loop_connection


async def _on_a_loop(posts: list[dict]) -> list:
    try:
        return await services.amessage_insert_many(posts)
    finally:
        # The loop async_to_sync made ends here: its connection with it.
        close_loop_connection()


# services.amessage_insert_many(posts) from synchronous code, on an event loop of
# its own; its database-thread work runs in the caller's thread (and connection).
insert_round = async_to_sync(_on_a_loop)


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
