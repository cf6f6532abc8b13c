from django.db import migrations

DEFAULT_ROOMS = [
    ("general", "General", "Talk about anything."),
    ("random", "Random", "Off-topic, links and fun."),
]


def create_default_rooms(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    for slug, name, description in DEFAULT_ROOMS:
        Room.objects.get_or_create(slug=slug, defaults={"name": name, "description": description})


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    # Reversing leaves the rooms: they may hold messages by then.
    operations = [migrations.RunPython(create_default_rooms, migrations.RunPython.noop)]
