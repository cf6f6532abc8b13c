from chat.api.throttling import SharedRateThrottle


class AuthRateThrottle(SharedRateThrottle):
    """Attempts per client address over all auth endpoints together (password
    guessing), counted in the shared cache so that every process agrees."""

    scope = "auth"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
