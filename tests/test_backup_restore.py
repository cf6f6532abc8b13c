"""The PostgreSQL backup and restore of docs/operations.md, against the local server.

A scratch database is migrated and given a room by the app, dumped with
`pg_dump -Fc`, restored with `pg_restore --clean --if-exists` into a second
scratch database, then restored again over a damaged copy: each time the rows
match the source. The test database is never touched.
"""

import glob
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from tests.conftest import REQUIRE_SERVICES, need_postgres
from tests.servers import BASE_DIR

pytestmark = pytest.mark.services

# The documented flags, exactly (docs/operations.md, "Backup and restore").
PG_DUMP_FLAGS = ["-Fc"]
PG_RESTORE_FLAGS = ["--clean", "--if-exists", "--no-owner", "--single-transaction"]

SEED = """
from django.contrib.auth import get_user_model
from chat import moderation, services

alice = get_user_model().objects.create_user("alice")
bob = get_user_model().objects.create_user("bob")
room = services.room_create(user=alice, name="Backups", description="kept safe")
services.room_join(user=bob, room=room)
for i in range(120):
    author = (alice, bob)[i % 2]
    client_id = f"c-{i}" if i % 3 else None
    services.message_post(user=author, room=room, body=f"message {i} \\u2713", client_id=client_id)
moderation.message_hide(actor=alice, message=room.messages.order_by("id").first())
"""

# What must come back: row counts, and checksums of the message column values in id order.
SNAPSHOT = {
    "users": "SELECT count(*) FROM auth_user",
    "rooms": "SELECT count(*) FROM chat_room",
    "memberships": "SELECT string_agg(user_id || role, ',' ORDER BY id) FROM chat_membership",
    "messages": "SELECT count(*) FROM chat_message",
    "bodies": "SELECT md5(string_agg(body, E'\\n' ORDER BY id)) FROM chat_message",
    "message_rows": (
        "SELECT md5(string_agg(concat_ws('|', id, room_id, user_id, client_id, created_at, "
        "hidden_at, hidden_by_id), E'\\n' ORDER BY id)) FROM chat_message"
    ),
    "audit": "SELECT count(*) FROM chat_auditentry",
    "migrations": "SELECT count(*) FROM django_migrations",
    # A restored database must hand out ids after the restored ones.
    "message_ids_ahead": (
        "SELECT last_value >= (SELECT max(id) FROM chat_message) FROM chat_message_id_seq"
    ),
}


def pg_tool(name: str) -> str:
    """`name` on PATH, else the newest under /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    if candidates:
        return max(candidates, key=lambda path: int(Path(path).parts[-3]))
    if REQUIRE_SERVICES:
        pytest.fail(f"{name} is required (Debian's postgresql-client)")
    pytest.skip(f"needs {name} (Debian's postgresql-client)")


class Server:
    """The PostgreSQL server the tests use, reached as the tests' own role."""

    def __init__(self) -> None:
        db = settings.DATABASES["default"]
        self.host = db["HOST"] or "127.0.0.1"
        self.port = str(db["PORT"] or 5432)
        self.user = db["USER"]
        self.password = db.get("PASSWORD") or ""

    def url(self, database: str) -> str:
        auth = quote(self.user, safe="") + (
            f":{quote(self.password, safe='')}" * bool(self.password)
        )
        return f"postgres://{auth}@{self.host}:{self.port}/{database}"

    def connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(self.url(database), autocommit=True)

    def create(self, database: str) -> None:
        with self.connect("postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

    def drop(self, database: str) -> None:
        with self.connect("postgres") as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )

    def snapshot(self, database: str) -> dict[str, object]:
        with self.connect(database) as conn:
            return {name: conn.execute(query).fetchone()[0] for name, query in SNAPSHOT.items()}


@pytest.fixture(scope="module")
def backup(tmp_path_factory) -> Iterator[dict]:
    """A scratch database migrated and given a room by the app, its dump, and
    the name of a second scratch database to restore into. Both are dropped
    afterwards, whatever happens."""
    need_postgres()
    server = Server()
    suffix = uuid.uuid4().hex[:12]
    source, restored = f"chat_backup_src_{suffix}", f"chat_backup_dst_{suffix}"
    dump = tmp_path_factory.mktemp("backup") / "chat.dump"
    try:
        server.create(source)
        manage(server.url(source), "migrate", "--noinput", "-v", "0")
        manage(server.url(source), "shell", "-c", SEED)
        run(
            [pg_tool("pg_dump"), *PG_DUMP_FLAGS, f"--dbname={server.url(source)}", f"--file={dump}"]
        )
        server.create(restored)
        yield {
            "server": server,
            "dump": dump,
            "expected": server.snapshot(source),
            "restored": restored,
        }
    finally:
        for name in (source, restored):
            server.drop(name)


def run(command: list[str], **env: str) -> None:
    result = subprocess.run(
        command,
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout}\n{result.stderr}"


def manage(database_url: str, *args: str) -> None:
    # No Redis: the seed's broadcasts stay in the process's in-memory layer.
    run(
        [sys.executable, "manage.py", *args],
        DEBUG="1",
        DATABASE_URL=database_url,
        REDIS_URL="",
    )


def restore(backup: dict) -> None:
    url = backup["server"].url(backup["restored"])
    run([pg_tool("pg_restore"), *PG_RESTORE_FLAGS, f"--dbname={url}", str(backup["dump"])])


def test_the_source_holds_what_the_test_expects(backup):
    assert backup["expected"]["messages"] == 120
    assert backup["expected"]["audit"] == 1
    assert backup["expected"]["message_ids_ahead"] is True


def test_pg_restore_into_a_new_database_brings_back_every_row(backup):
    restore(backup)

    assert backup["server"].snapshot(backup["restored"]) == backup["expected"]
    # Exits 1 when a migration is unapplied: the migration records came back too.
    manage(backup["server"].url(backup["restored"]), "migrate", "--check")


def test_pg_restore_over_a_damaged_database_puts_it_back(backup):
    restore(backup)
    with backup["server"].connect(backup["restored"]) as conn:
        conn.execute("DELETE FROM chat_auditentry")
        conn.execute("DELETE FROM chat_message WHERE id % 2 = 0")
        conn.execute("UPDATE chat_message SET body = 'vandalised'")
        conn.execute(
            "INSERT INTO chat_room (slug, name, description, is_private, is_locked, "
            "is_archived, created_at) VALUES ('extra', 'Extra', '', false, false, false, now())"
        )
    assert backup["server"].snapshot(backup["restored"]) != backup["expected"]

    restore(backup)

    assert backup["server"].snapshot(backup["restored"]) == backup["expected"]
