"""Work run in several threads at once, as several server processes would."""

import threading
import time
from collections.abc import Callable

import psycopg
from django.db import connection, connections


def run_at_once(work: Callable[..., object], calls: list[tuple], timeout: float = 30) -> list:
    """`work(*args)` for each args of `calls`, each in a thread of its own with
    its own database connection, released together. Returns what they raised."""
    start = threading.Barrier(len(calls))
    failures = []

    def run(args: tuple) -> None:
        try:
            start.wait()
            work(*args)
        except Exception as exc:  # noqa: BLE001 - returned to the caller, which asserts on it
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(args,)) for args in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread is still running"
    return failures


def another_session(*, autocommit: bool = False) -> psycopg.Connection:
    """A session of the test database's own, as another process's: in a
    transaction that the caller ends, unless `autocommit`."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)  # Django's, for its own connections
    return psycopg.connect(autocommit=autocommit, **params)


def wait_until_blocked(thread: threading.Thread, *, statement_like: str) -> None:
    """Return once a statement matching `statement_like` (SQL LIKE) waits
    for a lock in PostgreSQL: `thread`'s, which is still running."""
    for _ in range(500):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE %s",
                [statement_like],
            )
            if cursor.fetchone()[0]:
                return
        assert thread.is_alive()
        time.sleep(0.01)
    raise AssertionError(f"no statement like {statement_like!r} waited for a lock")


def while_another_signs_up(username: str, sign_up: Callable[[], object]) -> object:
    """`sign_up()` in a thread of its own while another session has made the
    user `username` and not committed yet, as a sign-up in another process
    for the same name: the thread's check that the name is free passes, its
    insert waits for the other's, and then the other commits. What
    `sign_up` returned."""
    returned = []

    def run() -> None:
        try:
            returned.append(sign_up())
        finally:
            connections.close_all()

    with another_session() as other_process:
        other_process.execute(
            "INSERT INTO auth_user (username, password, is_superuser, is_staff, is_active,"
            " first_name, last_name, email, date_joined)"
            " VALUES (%s, '!', false, false, true, '', '', '', now())",
            [username],
        )
        thread = threading.Thread(target=run)
        thread.start()
        wait_until_blocked(thread, statement_like='%INSERT INTO "auth_user"%')
        other_process.commit()
        thread.join(30)
    assert returned, "the sign-up raised (its traceback is above)"
    return returned[0]
