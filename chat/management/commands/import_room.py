from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.backup import ImportResult, RoomImportError, room_import
from chat.roomfile import RoomFileError, parse_slug

# Names listed in the summary; the rest are counted.
NAMES_SHOWN = 20


class Command(BaseCommand):
    help = (
        "Import a room written by export_room. Importing the same file again adds "
        "nothing. See docs/operations.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="a file written by export_room")
        parser.add_argument(
            "--into",
            metavar="SLUG",
            help="the room to import into (default: the exported room's slug); "
            "created when missing, else kept as it is",
        )

    def handle(self, *args: object, file: str, into: str | None, **options: object) -> None:
        if into is not None:
            try:
                parse_slug(into)
            except ValueError as exc:
                raise CommandError(f"--into {into!r}: {exc}.") from None
        try:
            result = room_import(path=Path(file), into=into)
        except (RoomFileError, RoomImportError) as exc:
            raise CommandError(f"{file}: {exc}") from None
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        for line in summary(result):
            self.stdout.write(line)


def summary(result: ImportResult) -> list[str]:
    if result.room_created:
        room = f"Room {result.slug!r}: created from {result.source_slug!r}."
    else:
        room = f"Room {result.slug!r}: exists, its settings kept."
    lines = [
        room,
        f"Members: {result.members_created} created, {result.members_skipped} skipped "
        "(already members).",
        f"Messages: {result.messages_created} created, {result.messages_skipped} skipped "
        "(already in the room).",
    ]
    if result.users_created:
        lines.append(
            f"Users: {len(result.users_created)} created inactive, without a usable password "
            f"(they cannot sign in): {names(result.users_created)}."
        )
    if result.owners_demoted:
        lines.append(
            f"The room has an owner already; imported as moderators: "
            f"{names(result.owners_demoted)}."
        )
    return lines


def names(usernames: list[str]) -> str:
    shown = ", ".join(usernames[:NAMES_SHOWN])
    rest = len(usernames) - NAMES_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown
