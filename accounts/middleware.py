"""WebSocket authentication: a bearer token for programs, the session for browsers.

Programs send `Authorization: Bearer <access JWT>`; browsers have their
session cookie (Channels' AuthMiddlewareStack). A handshake that carries a
bearer token is judged by the token alone: a bad token means anonymous (and a
refused handshake), never a fall-back to a cookie, and such a socket never
touches the session machinery (which wraps every frame it sends). Tokens are
not accepted in the query string, because URLs end up in access logs.
"""

import weakref

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from chat.batching import Batch
from chat.sharedstate import per_loop


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""  # an Authorization header, but not a usable bearer token
    return None


async def user_for_token(token: str):
    """The token's user, or AnonymousUser: simplejwt's JWTAuthentication, with
    the user read in a batch (_user_reads)."""
    user_model = get_user_model()
    try:
        # In the event loop: an access token's checks read no database (only
        # refresh and sliding tokens consult the blacklist).
        validated = JWTAuthentication().get_validated_token(token.encode())
        user_id = user_model._meta.get_field(api_settings.USER_ID_FIELD).to_python(
            validated[api_settings.USER_ID_CLAIM]
        )
    except (InvalidToken, KeyError, ValidationError):
        return AnonymousUser()
    user = await _user_reads().get(user_id)
    # JWTAuthentication.get_user's rules, on the user read.
    if user is None or (api_settings.CHECK_USER_IS_ACTIVE and not user.is_active):
        return AnonymousUser()
    if api_settings.CHECK_REVOKE_TOKEN and validated.get(
        api_settings.REVOKE_TOKEN_CLAIM
    ) != get_md5_hash_password(user.password):
        return AnonymousUser()
    return user


@database_sync_to_async
def _users_by_id(user_ids: list) -> dict:
    return get_user_model()._default_manager.in_bulk(
        user_ids, field_name=api_settings.USER_ID_FIELD
    )


# Handshakes' users, read together: one query for all that are waiting.
# Reading one user per handshake, each query in Channels' one database
# thread, made a reconnect storm (every client of a restarted process at
# once) queue behind that thread, which took half the process's CPU
# (docs/performance.md). A lone handshake still costs one query, and each read
# starts after its handshakes came, so a deactivation committed before a
# handshake is always seen. One per event loop (one per process in
# production; tests run several).
_reads: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _user_reads() -> Batch:
    return per_loop(_reads, lambda: Batch(_users_by_id))


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
