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
]
