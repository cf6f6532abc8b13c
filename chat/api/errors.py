"""The API's one exception handler: every error is a JSON body with a code."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.exceptions import ChatError


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ChatError):
        return Response({"code": exc.code, "detail": exc.detail}, status=exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict):
        # DRF's own errors carry the machine code as the exception's default code.
        response.data.setdefault("code", getattr(exc, "default_code", "error"))
    return response
