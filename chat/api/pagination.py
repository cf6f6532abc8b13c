from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, PageNumberPagination

from chat.selectors import LIST_PAGE_SIZE


class ListPagination(PageNumberPagination):
    """Rooms and members, a page at a time: a server with thousands of rooms,
    or a room with thousands of members, would answer a whole list in one
    response. `?page=N` (from 1) and `?page_size=` (up to 200); the page
    carries `count`, `next` and `previous` beside its `results`."""

    page_size = LIST_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = 200


class MessageCursorPagination(CursorPagination):
    """History pages in the room's own order: newest first, or oldest first with `?after=`.

    A cursor is a position in the (room, seq) index, so a page deep in the
    past costs the same as the first one: no OFFSET, no COUNT. Within a room,
    seq order is id order (chat.models.Message.seq); ordering by id instead
    let PostgreSQL walk the whole table's primary key backwards past other
    rooms' newer messages, when the room is a large share of the table.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-seq"

    def get_ordering(self, request, queryset, view) -> tuple[str, ...]:
        return ("seq",) if "after" in request.query_params else ("-seq",)

    def decode_cursor(self, request):
        """DRF's cursor, with its position checked: DRF takes any text there,
        and a cursor made by hand with a word for the seq reached the query
        and failed it (a 500). A cursor's position is always a number."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                int(cursor.position)
            except ValueError:
                raise NotFound(self.invalid_cursor_message) from None
        return cursor
