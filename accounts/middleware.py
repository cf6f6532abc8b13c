"""WebSocket authentication for programs: `Authorization: Bearer <access JWT>`.

Browsers authenticate the socket with their session cookie (Channels'
AuthMiddlewareStack, which runs outside this). A request that carries a bearer
token is judged by the token alone: a bad token means anonymous (and a refused
handshake), never a fall-back to a cookie. Tokens are not accepted in the query
string, because URLs end up in access logs.
"""

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
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


class BearerTokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        token = bearer_token(scope.get("headers", []))
        if token is not None:
            scope = dict(scope, user=await user_for_token(token) if token else AnonymousUser())
        return await super().__call__(scope, receive, send)
