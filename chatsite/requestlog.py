"""One log line per HTTP request, under a request id.

The id comes from the `X-Request-ID` header when it is a sane one (nginx sets
it to its own $request_id, so the two logs can be joined), else a fresh one.
It is set for everything logged while the request runs, and echoed in the
response's `X-Request-ID`.

The line holds the method, the path without its query string, the status, the
duration and the user's id: never the query string (it may carry anything a
client put there), headers (Authorization) or bodies (passwords).
"""

import logging
import time

from django.http import HttpRequest, HttpResponse
from django.utils.encoding import escape_uri_path
from django.utils.functional import SimpleLazyObject, empty

from chatsite import logs
from chatsite.middleware import BothModesMiddleware

logger = logging.getLogger(__name__)
HEADER = "X-Request-ID"
# Probes arrive every few seconds from each orchestrator and Prometheus: their
# lines go to DEBUG so that they do not drown the rest.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def user_id(request: HttpRequest) -> int | None:
    """The user's id if the request has already looked the user up, else None.

    Never looks it up itself: that is a database query, and a synchronous one
    (refused in async code) for a session.
    """
    user = getattr(request, "user", None)
    if isinstance(user, SimpleLazyObject):
        user = None if user._wrapped is empty else user._wrapped
    return user.pk if user is not None and user.is_authenticated else None


class RequestLogMiddleware(BothModesMiddleware):
    # The id is set, never reset. Under ASGI each request has a task and a
    # context of its own; should a sync-only middleware make Django run
    # the chain in a thread, asgiref copies the thread's context changes
    # back into that task. Either way the id also covers what Django
    # logs after the middleware is done: a failed request's django.request
    # line. A sync (WSGI) worker thread keeps it until its next request.
    def call(self, request: HttpRequest) -> HttpResponse:
        started = self._start(request)
        response = self.get_response(request)
        self._finish(request, response, started)
        return response

    async def acall(self, request: HttpRequest) -> HttpResponse:
        started = self._start(request)
        response = await self.get_response(request)
        self._finish(request, response, started)
        return response

    def _start(self, request: HttpRequest) -> float:
        given = request.headers.get(HEADER)
        request.request_id = given if logs.valid_request_id(given) else logs.new_id()
        logs.request_id.set(request.request_id)
        return time.perf_counter()

    def _finish(self, request: HttpRequest, response: HttpResponse, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        response[HEADER] = request.request_id
        quiet = request.path in QUIET_PATHS
        path = escape_uri_path(request.path)
        logger.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s %s",
            request.method,
            path,
            response.status_code,
            extra={
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "user_id": user_id(request),
            },
        )
