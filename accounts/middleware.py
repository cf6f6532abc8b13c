"""WebSocket authentication: a bearer token for programs, the session for browsers.

Programs send `Authorization: Bearer <access JWT>`; browsers have their
session cookie (Channels' AuthMiddlewareStack). A handshake that carries a
bearer token is judged by the token alone: a bad token means anonymous (and a
refused handshake), never a fall-back to a cookie, and such a socket never
touches the session machinery (which wraps every frame it sends). Tokens are
not accepted in the query string, because URLs end up in access logs.
"""

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""  # an Authorization header, but not a usable bearer token
    return None


@database_sync_to_async
def user_for_token(token: str):
    authentication = JWTAuthentication()
    try:
        return authentication.get_user(authentication.get_validated_token(token.encode()))
    except (InvalidToken, AuthenticationFailed):
        return AnonymousUser()


class SocketAuthMiddleware:
    """`scope["user"]` from the bearer token if there is one, else from the session."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.with_session = AuthMiddlewareStack(inner)

    async def __call__(self, scope, receive, send):
        token = bearer_token(scope.get("headers", []))
        if token is None:
            return await self.with_session(scope, receive, send)
        user = await user_for_token(token) if token else AnonymousUser()
        return await self.inner(dict(scope, user=user), receive, send)
