"""Error pages: JSON under /api/ (programs parse it), HTML everywhere else.

DRF turns errors inside its views into JSON; these cover what never reaches a
view (an /api/ URL that matches no route) and crashes.
"""

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """What Django refuses before any view: a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE (413 here), too many fields, a bad Host."""
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            body = {"code": "request_too_large", "detail": "The request body is too large."}
            return JsonResponse(body, status=413)
        return JsonResponse({"code": "bad_request", "detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"code": "not_found", "detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"code": "server_error", "detail": "Server error."}, status=500)
    return defaults.server_error(request)
