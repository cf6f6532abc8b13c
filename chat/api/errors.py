"""The API's one exception handler: every error is a JSON object with a `code`."""

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.exceptions import ChatError
from chat.metrics import ERRORS


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ChatError):
        ERRORS.labels(exc.code, "api").inc()
        body = {"code": exc.code, "detail": exc.detail, **exc.extra}
        return Response(body, status=exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # not an API error: Django answers (500, logged)
    data = response.data if isinstance(response.data, dict) else {"detail": response.data}
    if isinstance(exc, exceptions.ValidationError):
        # Field errors stay keyed by field, as DRF gives them; `code` says what kind.
        data.setdefault("code", "invalid")
    else:
        data.setdefault("code", getattr(exc, "default_code", "error"))
    response.data = data
    # A serializer field named `code` would put its list of errors here.
    ERRORS.labels(data["code"] if isinstance(data["code"], str) else "invalid", "api").inc()
    return response
