"""The Origin check for WebSocket handshakes (cross-site WebSocket hijacking)."""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """Channels' check, except that a handshake without an Origin passes.

    Browsers always send Origin, so a page on another site can never open a
    socket with our cookie: its Origin fails the check. A handshake without
    Origin comes from a program (a bot, the load generator), which proves who it
    is with a bearer token, and could forge any Origin anyway.
    """

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def AllowedHostsOriginValidator(application):  # noqa: N802 - mirrors Channels' name
    """Allow the origins of ALLOWED_HOSTS (any origin only under DEBUG with no hosts)."""
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
