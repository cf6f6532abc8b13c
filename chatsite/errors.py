"""Error pages: JSON under /api/ (programs parse it), HTML everywhere else.

DRF turns errors inside its views into JSON; these cover what never reaches a
view (an /api/ URL that matches no route) and crashes.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"code": "not_found", "detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"code": "server_error", "detail": "Server error."}, status=500)
    return defaults.server_error(request)
