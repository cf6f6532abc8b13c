"""Prometheus at /metrics: HTTP request metrics, and the view that exposes
every metric of this process (chat.metrics holds the chat's own).

Each Daphne process has its own registry, so Prometheus scrapes each process
directly (docs/operations.md, "Metrics"), never through nginx, which refuses
/metrics from outside. So the middleware answers /metrics itself, before
Django's host check and HTTPS redirect: a scraper asks for
http://<process address>:8000/metrics, a host name no ALLOWED_HOSTS lists,
over plain HTTP. Nothing in the answer depends on the host.

It answers to the addresses in METRICS_ALLOWED_IPS, or to anyone with
`Authorization: Bearer <METRICS_TOKEN>`. The address is REMOTE_ADDR: the peer
Daphne saw, or with --proxy-headers what nginx saw (nginx replaces
X-Forwarded-For). With METRICS_ENABLED off, /metrics is like any unknown URL:
a 404.
"""

import functools
import hmac
import ipaddress
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

import chat.metrics  # noqa: F401 - registers the chat's metrics, whoever imported what
from chatsite.middleware import BothModesMiddleware

# A `_created` series beside every counter and histogram doubles what
# Prometheus stores, for a start time it does not need.
disable_created_metrics()

PATH = "/metrics"
# Methods outside this set count as "other": a client may send any token as a
# method, and each distinct label value is a new series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HTTP_REQUESTS = Counter(
    "chat_http_requests",
    "HTTP requests answered by this process, by method and status code.",
    ["method", "status"],
)
# By method only: a status or route label would multiply the buckets.
HTTP_DURATION = Histogram(
    "chat_http_request_duration_seconds",
    "Time from the request entering Django's middleware to its response leaving it.",
    ["method"],
)


class RequestMetricsMiddleware(BothModesMiddleware):
    def call(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        if request.path_info == PATH and settings.METRICS_ENABLED:
            response = metrics(request)
        else:
            response = self.get_response(request)
        observe_request(request.method, response.status_code, time.perf_counter() - started)
        return response

    async def acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        if request.path_info == PATH and settings.METRICS_ENABLED:
            response = metrics(request)  # no database, no waiting: fine on the loop
        else:
            response = await self.get_response(request)
        observe_request(request.method, response.status_code, time.perf_counter() - started)
        return response


def observe_request(method: str, status: int, seconds: float) -> None:
    method = method if method in METHODS else "other"
    HTTP_REQUESTS.labels(method, str(status)).inc()
    HTTP_DURATION.labels(method).observe(seconds)


@functools.cache
def _networks(allowed: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(item, strict=False) for item in allowed)


def address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # no address at all (a Unix socket), or a name
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener's IPv4 client
    return any(ip in network for network in _networks(tuple(settings.METRICS_ALLOWED_IPS)))


def token_given(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Every metric of this process, to an allowed address or the token's bearer."""
    if not (address_allowed(request.META.get("REMOTE_ADDR", "")) or token_given(request)):
        return HttpResponseForbidden("Forbidden.\n", content_type="text/plain")
    # The text format Prometheus asks for in Accept (OpenMetrics or classic).
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(), content_type=content_type)
