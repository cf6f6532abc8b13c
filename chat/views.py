from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chat import protocol, selectors
from chat.exceptions import RoomNotFound
from chat.roles import MANAGERS, is_staff


@login_required
def room_list(request: HttpRequest) -> HttpResponse:
    rooms = selectors.room_list_for_user(user=request.user)
    # A page past the last, or not a number, shows the nearest one.
    page = Paginator(rooms, selectors.LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "chat/room_list.html", {"rooms": page})


@login_required
def room_detail(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        room = selectors.room_get_visible(slug=slug, user=request.user)
    except RoomNotFound:
        raise Http404("No such room.") from None
    page = selectors.message_page(room=room, since=None)
    context = {
        "room": room,
        "can_moderate": room.my_role in MANAGERS or is_staff(request.user),
        "history": page.messages,
        # The page hands its messages to chat.js in the wire format, with how
        # far they are complete (as a `joined` frame), so that the script
        # knows where to resume from.
        "initial": [protocol.message_payload(message) for message in page.messages],
        "initial_seq": page.through,
    }
    return render(request, "chat/room.html", context)
