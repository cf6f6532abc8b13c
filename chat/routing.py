from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from chat.consumers import ChatConsumer


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any other path: the handshake is refused (403). Channels' router
    raises for a path it has no route for, which Daphne answers with a 500
    and a traceback in the log."""

    channel_layer_alias = None

    async def connect(self) -> None:
        await self.close()


websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
    re_path(r"", NoSuchSocket.as_asgi()),
]
