"""The project's migrations keep docs/operations.md's rule for rolling
upgrades: while the new release migrates, the release before still inserts
rows, leaving out the columns it does not know."""

import pytest
from django.db import connection, migrations
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.models import NOT_PROVIDED

from chat.models import Membership

APPS = {"chat", "accounts"}
# Written before the rule, and before any deployment.
BEFORE_THE_RULE = {("chat", "0001_initial"), ("chat", "0003_moderation")}


def test_a_column_added_is_nullable_or_has_a_database_default():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    offending = [
        f"{app} {name}: {operation.model_name}.{operation.name}"
        for (app, name), migration in sorted(loader.disk_migrations.items())
        if app in APPS and (app, name) not in BEFORE_THE_RULE
        for operation in migration.operations
        if isinstance(operation, migrations.AddField)
        and not operation.field.null
        and operation.field.db_default is NOT_PROVIDED
    ]
    assert offending == []


@pytest.mark.django_db(transaction=True)
def test_bans_from_before_ban_authority_take_their_makers_authority_from_the_audit_log():
    executor = MigrationExecutor(connection)
    executor.migrate([("chat", "0007_room_sequence")])
    old = executor.loader.project_state([("chat", "0007_room_sequence")]).apps
    users, rooms = old.get_model("auth", "User").objects, old.get_model("chat", "Room").objects
    members, audit = (
        old.get_model("chat", "Membership").objects,
        old.get_model("chat", "AuditEntry"),
    )
    room = rooms.create(slug="old", name="Old")
    root = users.create(username="root", is_staff=True)
    owner, mod, a, b, c = (users.create(username=name) for name in ("own", "mod", "a", "b", "c"))
    members.create(room=room, user=owner, role="owner")
    members.create(room=room, user=mod, role="moderator")
    for target, actor in ((a, root), (b, owner), (c, mod)):
        members.create(room=room, user=target, is_banned=True)
        audit.objects.create(room=room, actor=actor, target_user=target, action="member_ban")
    stranger = users.create(username="d")
    members.create(room=room, user=stranger, is_banned=True)  # no record of the ban

    executor = MigrationExecutor(connection)  # the graph again, as `migrate` would
    executor.migrate(executor.loader.graph.leaf_nodes())

    banned = Membership.objects.filter(room__slug="old", is_banned=True)
    assert dict(banned.values_list("user__username", "ban_authority")) == {
        "a": "staff",
        "b": "owner",
        "c": "moderator",
        "d": "",
    }
