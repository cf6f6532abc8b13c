"""The project's migrations keep docs/operations.md's rule for rolling
upgrades: while the new release migrates, the release before still inserts
rows, leaving out the columns it does not know."""

from django.db import migrations
from django.db.migrations.loader import MigrationLoader
from django.db.models import NOT_PROVIDED

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
