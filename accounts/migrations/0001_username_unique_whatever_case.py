"""Usernames unique whatever their case, in the database itself.

The sign-up form and the API refuse a name that differs from a taken one only
in case, but two sign-ups at once both pass that check; the unique index on
`username` is case-sensitive, so both were stored. This index decides between
them: the loser hears UsernameTaken (accounts.services.user_sign_up).
"""

from django.db import migrations
from django.db.models import Count
from django.db.models.functions import Upper

INDEX = "accounts_username_upper_uniq"


def refuse_names_that_differ_only_in_case(apps, schema_editor):
    users = apps.get_model("auth", "User").objects.using(schema_editor.connection.alias)
    clashes = (
        users.annotate(name=Upper("username"))
        .values("name")
        .annotate(count=Count("id"))
        .filter(count__gt=1)
        .values_list("name", flat=True)
    )
    if clashes:
        names = users.annotate(name=Upper("username")).filter(name__in=list(clashes))
        raise RuntimeError(
            "These usernames differ only in case: "
            + ", ".join(sorted(names.values_list("username", flat=True)))
            + ". Rename all but one of each (admin: Users), then migrate again."
        )


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]

    operations = [
        migrations.RunPython(refuse_names_that_differ_only_in_case, migrations.RunPython.noop),
        migrations.RunSQL(
            f"CREATE UNIQUE INDEX {INDEX} ON auth_user (UPPER(username))",
            f"DROP INDEX {INDEX}",
        ),
    ]
