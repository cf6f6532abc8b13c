import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.backup import room_export
from chat.models import Room


class Command(BaseCommand):
    help = (
        "Write a room, its members and its messages (hidden ones too) as JSON Lines, "
        "for import_room. See docs/operations.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="the room to export")
        parser.add_argument(
            "--output", "-o", metavar="FILE", help="write here instead of standard output"
        )

    def handle(self, *args: object, slug: str, output: str | None, **options: object) -> None:
        try:
            room = Room.objects.get(slug=slug)
        except Room.DoesNotExist:
            raise CommandError(f"No room {slug!r}.") from None
        if output is None:
            counts = room_export(room=room, out=self.stdout)
            # Standard output is the file: the summary goes elsewhere.
            report = self.stderr
        else:
            path = Path(output)
            # Written aside and renamed when complete: a failed export leaves no
            # truncated file that an import would take for a whole room.
            partial = path.with_name(f"{path.name}.partial")
            try:
                with partial.open("w", encoding="utf-8") as out:
                    counts = room_export(room=room, out=out)
                os.replace(partial, path)
            except OSError as exc:
                raise CommandError(f"Cannot write {output}: {exc.strerror}.") from None
            finally:
                partial.unlink(missing_ok=True)
            report = self.stdout
        report.write(
            f"Exported room {slug!r}: {counts.members} members, {counts.messages} messages.",
            style_func=str,
        )
