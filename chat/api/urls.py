from django.urls import path

from chat.api import views

urlpatterns = [
    path("rooms/", views.RoomListView.as_view(), name="api-rooms"),
    path("rooms/<slug:slug>/", views.RoomDetailView.as_view(), name="api-room"),
    path("rooms/<slug:slug>/join/", views.RoomJoinView.as_view(), name="api-room-join"),
    path("rooms/<slug:slug>/leave/", views.RoomLeaveView.as_view(), name="api-room-leave"),
    path("rooms/<slug:slug>/members/", views.MemberListView.as_view(), name="api-members"),
    path(
        "rooms/<slug:slug>/members/<str:username>/",
        views.MemberDetailView.as_view(),
        name="api-member",
    ),
    path("rooms/<slug:slug>/messages/", views.MessageListView.as_view(), name="api-messages"),
    path(
        "rooms/<slug:slug>/messages/<int:message_id>/",
        views.MessageDetailView.as_view(),
        name="api-message",
    ),
    path("rooms/<slug:slug>/lock/", views.RoomLockView.as_view(), name="api-room-lock"),
    path("rooms/<slug:slug>/archive/", views.RoomArchiveView.as_view(), name="api-room-archive"),
    path(
        "rooms/<slug:slug>/members/<str:username>/mute/",
        views.MemberMuteView.as_view(),
        name="api-member-mute",
    ),
    path(
        "rooms/<slug:slug>/members/<str:username>/ban/",
        views.MemberBanView.as_view(),
        name="api-member-ban",
    ),
]
