import logging

from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class SharedRateThrottle(SimpleRateThrottle):
    """A DRF throttle counted in the shared cache (Redis when there is one).

    When the cache is unreachable the request goes through: with Redis down
    the API must still store messages; only the throttling pauses.
    """

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError):
            logger.warning("throttle %s unavailable; allowing", self.scope, exc_info=True)
            return True


class SendRateThrottle(SharedRateThrottle):
    """Messages sent through the API per user."""

    scope = "send"

    def get_cache_key(self, request, view) -> str | None:
        if request.method != "POST":
            return None  # reading history is cheap and paged: not throttled
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
