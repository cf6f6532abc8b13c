"""Work run in several threads at once, as several server processes would."""

import threading
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
