"""The event loop's own PostgreSQL connection (chat.asyncdb), against the real database."""

import asyncio

import psycopg
import pytest
from django.db import IntegrityError, OperationalError, connection

from chat import asyncdb
from chat.asyncdb import close_loop_connection, loop_connection
from chat.models import Room
from tests.concurrency import another_session
from tests.conftest import need_postgres

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

BACKEND = "SELECT pg_backend_pid(), current_database()"


@pytest.fixture(autouse=True)
def _postgres():
    need_postgres()


def _terminate(pid: int) -> None:
    # A session of its own: the test's Django connection is the database thread's.
    with another_session(autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_statements_run_on_the_test_database_and_keep_their_connection():
    [(pid, database)] = await loop_connection().fetchall(BACKEND, {})
    assert database == connection.settings_dict["NAME"]
    assert (await loop_connection().fetchall(BACKEND, {}))[0][0] == pid


async def test_a_failed_statement_raises_djangos_error_and_the_connection_stays():
    [(pid, _)] = await loop_connection().fetchall(BACKEND, {})
    with pytest.raises(IntegrityError) as raised:
        await loop_connection().fetchall(
            f"INSERT INTO {Room._meta.db_table} (slug) VALUES (%(slug)s) RETURNING id",  # noqa: S608
            {"slug": None},
        )
    # The driver's error is kept for callers that read its details.
    assert isinstance(raised.value.__cause__, psycopg.errors.NotNullViolation)
    assert (await loop_connection().fetchall(BACKEND, {}))[0][0] == pid


async def test_a_lost_connection_raises_operational_error_and_the_next_call_reconnects():
    [(pid, _)] = await loop_connection().fetchall(BACKEND, {})
    await asyncio.to_thread(_terminate, pid)
    with pytest.raises(OperationalError):
        await loop_connection().fetchall(BACKEND, {})
    [(again, _)] = await loop_connection().fetchall(BACKEND, {})
    assert again != pid


async def test_a_cancelled_statement_leaves_no_busy_connection_behind():
    sleeping = asyncio.ensure_future(loop_connection().fetchall("SELECT pg_sleep(5)", {}))
    await asyncio.sleep(0.2)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    # The next statement does not wait behind the sleep, which no session still runs.
    busy = await asyncio.wait_for(
        loop_connection().fetchall(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' "
            "AND state = 'active'",
            {},
        ),
        2,
    )
    assert busy == [(0,)]


async def test_a_statement_is_prepared_after_a_few_runs_as_on_the_pool():
    threshold = connection.settings_dict["OPTIONS"].get("prepare_threshold")
    query = "SELECT %(n)s::int + 1"
    for n in range((threshold or 5) + 1):
        assert await loop_connection().fetchall(query, {"n": n}) == [(n + 1,)]
    prepared = await loop_connection().fetchall("SELECT statement FROM pg_prepared_statements", {})
    # Unless the settings turn preparing off (DB_PREPARED_STATEMENTS=0).
    assert bool([row for row in prepared if "+ 1" in row[0]]) == (threshold is not None)


async def test_closing_the_loops_connection_ends_its_session():
    [(pid, _)] = await loop_connection().fetchall(BACKEND, {})
    close_loop_connection()
    [(again, _)] = await loop_connection().fetchall(BACKEND, {})
    assert again != pid
    # The server ends the session as it reads the goodbye: soon, not at once.
    for _ in range(50):
        sessions = await loop_connection().fetchall(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %(pid)s", {"pid": pid}
        )
        if sessions == [(0,)]:
            break
        await asyncio.sleep(0.02)
    assert sessions == [(0,)]


async def test_a_statement_that_waits_too_long_is_cancelled_and_the_connection_stays(
    room, monkeypatch
):
    """A lock held by a long transaction elsewhere: PostgreSQL cancels the
    loop's statement after STATEMENT_TIMEOUT, reported as a lost connection
    is (OperationalError), instead of it holding every later round."""
    monkeypatch.setattr(asyncdb, "STATEMENT_TIMEOUT", 0.2)
    close_loop_connection()  # the next one opens with the shorter timeout
    [(pid, _)] = await loop_connection().fetchall(BACKEND, {})
    lock = f"SELECT id FROM {Room._meta.db_table} WHERE id = %(id)s FOR UPDATE"  # noqa: S608
    with await asyncio.to_thread(another_session) as elsewhere:
        await asyncio.to_thread(elsewhere.execute, lock, {"id": room.id})
        with pytest.raises(OperationalError):
            await asyncio.wait_for(loop_connection().fetchall(lock, {"id": room.id}), 5)
    assert await loop_connection().fetchall(lock, {"id": room.id}) == [(room.id,)]
    assert (await loop_connection().fetchall(BACKEND, {}))[0][0] == pid


async def test_the_connection_finds_a_vanished_server_by_tcp_keepalives(settings):
    """As the pool's connections do (chatsite.settings): a host that goes away
    without a reset does not hold the loop's rounds for many minutes."""
    await loop_connection().fetchall(BACKEND, {})
    parameters = loop_connection().connection.info.get_parameters()
    for name, value in settings.DATABASE_KEEPALIVES.items():
        assert parameters[name] == str(value)
