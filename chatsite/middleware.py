"""What the project's HTTP middlewares share: running in whichever chain
Django builds for them."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse


class BothModesMiddleware:
    """A middleware that runs in Django's asynchronous chain (under ASGI) as a
    coroutine, `acall`, and in a synchronous one as a function, `call`.

    One synchronous-only middleware is enough for Django to run it and every
    middleware outside it in a thread, handing the rest of the chain back to
    the event loop from there (async_to_sync): hops per request, and threads
    that wait for the loop (chatsite.serve).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.async_mode:
            return self.acall(request)
        return self.call(request)

    def call(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    async def acall(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError
