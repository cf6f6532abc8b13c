from rest_framework.pagination import CursorPagination


class MessageCursorPagination(CursorPagination):
    """History pages by message id: newest first, or oldest first with `?after=`.

    A cursor is a position in the (room, id) index, so a page deep in the past
    costs the same as the first one: no OFFSET, no COUNT.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-id"

    def get_ordering(self, request, queryset, view) -> tuple[str, ...]:
        return ("id",) if "after" in request.query_params else ("-id",)
