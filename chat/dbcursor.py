"""A database cursor whose statement PostgreSQL can keep prepared.

Django's PostgreSQL cursors bind parameters on the client: the server parses
and plans every statement's text anew. For the insert of a round of posts
(chat.services._insert_many_sql) run from the database thread (the socket's
runs on the event loop's own connection, chat.asyncdb), a statement of many
parts, planning
took longer than running it (0.8 ms against 0.4), every time. A cursor that
binds on the server lets psycopg prepare the statement on a connection once
it has run `prepare_threshold` times there (chatsite.settings), and run it
from then on without planning.
"""

from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper


def prepared_cursor() -> CursorWrapper:
    """A cursor of the default connection (PostgreSQL) that binds on the
    server, wrapped as Django wraps its own: errors become Django's, and
    tests that count queries see it."""
    connection.ensure_connection()
    cursor = ServerBindingCursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)
