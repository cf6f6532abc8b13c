from rest_framework.throttling import SimpleRateThrottle


class SendRateThrottle(SimpleRateThrottle):
    """Messages sent through the API per user, counted in the shared cache."""

    scope = "send"

    def get_cache_key(self, request, view) -> str | None:
        if request.method != "POST":
            return None  # reading history is cheap and paged: not throttled
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
