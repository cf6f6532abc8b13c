"""The REST API: parse with a serializer, call one service or selector, answer.

Permissions are the services' rules (chat.exceptions.Forbidden -> 403) and
the selectors' visibility (a private room is 404 to outsiders).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import moderation, selectors, services
from chat.api.pagination import ListPagination, MessageCursorPagination
from chat.api.serializers import (
    ArchiveSerializer,
    HistoryQuerySerializer,
    LockSerializer,
    MemberAddSerializer,
    MemberSerializer,
    MessageCreateSerializer,
    MessageSerializer,
    MuteSerializer,
    ReasonSerializer,
    RoomCreateSerializer,
    RoomSerializer,
    RoomUpdateSerializer,
)
from chat.api.throttling import SendRateThrottle


def _visible_room(request: Request, slug: str):
    return selectors.room_get_visible(slug=slug, user=request.user)


def _room_response(request: Request, slug: str, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(RoomSerializer(_visible_room(request, slug)).data, status=status_code)


class RoomListView(GenericAPIView):
    serializer_class = RoomSerializer
    pagination_class = ListPagination

    @extend_schema(responses=RoomSerializer(many=True), summary="Rooms I can see, by name")
    def get(self, request: Request) -> Response:
        return _page(self, selectors.room_list_for_user(user=request.user), RoomSerializer)

    @extend_schema(
        request=RoomCreateSerializer,
        responses={201: RoomSerializer},
        summary="Create a room (the creator becomes its owner)",
    )
    def post(self, request: Request) -> Response:
        data = _parsed(RoomCreateSerializer, request)
        room = services.room_create(user=request.user, **data)
        return _room_response(request, room.slug, status.HTTP_201_CREATED)


class RoomDetailView(APIView):
    @extend_schema(responses=RoomSerializer, summary="One room")
    def get(self, request: Request, slug: str) -> Response:
        return _room_response(request, slug)

    @extend_schema(
        request=RoomUpdateSerializer, responses=RoomSerializer, summary="Change a room (owner)"
    )
    def patch(self, request: Request, slug: str) -> Response:
        room = _visible_room(request, slug)
        data = _parsed(RoomUpdateSerializer, request)
        services.room_update(user=request.user, room=room, **data)
        return _room_response(request, slug)

    @extend_schema(responses={204: None}, summary="Delete a room and its messages (owner)")
    def delete(self, request: Request, slug: str) -> Response:
        services.room_delete(user=request.user, room=_visible_room(request, slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoomJoinView(APIView):
    @extend_schema(request=None, responses=RoomSerializer, summary="Join a public room")
    def post(self, request: Request, slug: str) -> Response:
        services.room_join(user=request.user, room=_visible_room(request, slug))
        return _room_response(request, slug)


class RoomLeaveView(APIView):
    @extend_schema(request=None, responses={204: None}, summary="Leave a room")
    def post(self, request: Request, slug: str) -> Response:
        services.room_leave(user=request.user, room=_visible_room(request, slug))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberListView(GenericAPIView):
    serializer_class = MemberSerializer
    pagination_class = ListPagination

    @extend_schema(responses=MemberSerializer(many=True), summary="A room's members, oldest first")
    def get(self, request: Request, slug: str) -> Response:
        members = selectors.member_list(room=_visible_room(request, slug))
        return _page(self, members, MemberSerializer)

    @extend_schema(
        request=MemberAddSerializer,
        responses={201: MemberSerializer, 200: MemberSerializer},
        summary="Add a member (owner or moderator; 200 if already a member)",
    )
    def post(self, request: Request, slug: str) -> Response:
        room = _visible_room(request, slug)
        data = _parsed(MemberAddSerializer, request)
        membership, created = services.member_add(actor=request.user, room=room, **data)
        return _created_or_found(MemberSerializer(membership).data, created)


class MemberDetailView(APIView):
    @extend_schema(responses={204: None}, summary="Remove a member (or yourself)")
    def delete(self, request: Request, slug: str, username: str) -> Response:
        room = _visible_room(request, slug)
        membership = selectors.member_get(room=room, username=username)
        services.member_remove(actor=request.user, room=room, membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageListView(GenericAPIView):
    serializer_class = MessageSerializer
    pagination_class = MessageCursorPagination
    throttle_classes = [SendRateThrottle]

    @extend_schema(
        parameters=[
            OpenApiParameter("before", OpenApiTypes.INT, description="Only ids below this."),
            OpenApiParameter(
                "after", OpenApiTypes.INT, description="Only ids above this, oldest first."
            ),
        ],
        # A page of messages (the paginator's envelope): GenericAPIView's get
        # is not taken for a list unless told.
        responses=MessageSerializer(many=True),
        summary="Message history, newest first (oldest first with `after`)",
    )
    def get(self, request: Request, slug: str) -> Response:
        room = selectors.room_get_readable(slug=slug, user=request.user)
        query = _parsed(HistoryQuerySerializer, request, request.query_params)
        messages = selectors.message_history(
            room=room, before=query.get("before"), after=query.get("after")
        )
        return _page(self, messages, MessageSerializer)

    @extend_schema(
        request=MessageCreateSerializer,
        responses={201: MessageSerializer, 200: MessageSerializer},
        summary="Send a message (200 with the stored one for a repeated client_id)",
    )
    def post(self, request: Request, slug: str) -> Response:
        room = _visible_room(request, slug)
        data = _parsed(MessageCreateSerializer, request)
        message, created = services.message_post(user=request.user, room=room, **data)
        return _created_or_found(MessageSerializer(message).data, created)


class MessageDetailView(APIView):
    @extend_schema(
        request=ReasonSerializer,
        responses={204: None},
        summary="Delete a message (its author) or hide it (moderators)",
    )
    def delete(self, request: Request, slug: str, message_id: int) -> Response:
        moderation.message_delete(
            user=request.user,
            room=_visible_room(request, slug),
            message_id=message_id,
            **_parsed(ReasonSerializer, request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoomLockView(APIView):
    @extend_schema(request=LockSerializer, responses=RoomSerializer, summary="Lock or unlock")
    def post(self, request: Request, slug: str) -> Response:
        data = _parsed(LockSerializer, request)
        moderation.room_set_locked(actor=request.user, room=_visible_room(request, slug), **data)
        return _room_response(request, slug)


class RoomArchiveView(APIView):
    @extend_schema(
        request=ArchiveSerializer, responses=RoomSerializer, summary="Archive or unarchive"
    )
    def post(self, request: Request, slug: str) -> Response:
        data = _parsed(ArchiveSerializer, request)
        moderation.room_set_archived(actor=request.user, room=_visible_room(request, slug), **data)
        return _room_response(request, slug)


class MemberMuteView(APIView):
    @extend_schema(request=MuteSerializer, responses=MemberSerializer, summary="Mute until a time")
    def post(self, request: Request, slug: str, username: str) -> Response:
        room = _visible_room(request, slug)
        target = selectors.user_get(username=username)
        membership = moderation.member_mute(
            actor=request.user, room=room, user=target, **_parsed(MuteSerializer, request)
        )
        return Response(MemberSerializer(membership).data)


class MemberBanView(APIView):
    @extend_schema(request=ReasonSerializer, responses=MemberSerializer, summary="Ban")
    def post(self, request: Request, slug: str, username: str) -> Response:
        room = _visible_room(request, slug)
        target = selectors.user_get(username=username)
        membership = moderation.member_ban(
            actor=request.user, room=room, user=target, **_parsed(ReasonSerializer, request)
        )
        return Response(MemberSerializer(membership).data)

    @extend_schema(request=ReasonSerializer, responses={204: None}, summary="Unban")
    def delete(self, request: Request, slug: str, username: str) -> Response:
        room = _visible_room(request, slug)
        target = selectors.user_get(username=username)
        moderation.member_unban(
            actor=request.user, room=room, user=target, **_parsed(ReasonSerializer, request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


def _parsed(serializer_class, request: Request, data=None) -> dict:
    """The request body (or `data`) validated by `serializer_class`; 400 if invalid."""
    serializer = serializer_class(data=request.data if data is None else data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _page(view: GenericAPIView, queryset, serializer_class) -> Response:
    """The page of `queryset` that the request asks for, in the view's paginator's envelope."""
    page = view.paginate_queryset(queryset)
    return view.get_paginated_response(serializer_class(page, many=True).data)


def _created_or_found(data: dict, created: bool) -> Response:
    """201 for a new resource, 200 for the one that already existed (idempotent POSTs)."""
    return Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
