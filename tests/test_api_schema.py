"""The OpenAPI schema describes the API: Schemathesis calls every endpoint with
generated input, authenticated, and checks each answer against the schema."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import make_member, make_messages, make_room, make_user

# No 5xx, and every answer (status, content type, headers, body) is one the
# schema documents.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture
def in_process_requests():
    """Requests run in the test's own transaction, as with Django's test client:
    the end of a request must not close the test's database connection."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def token(db, in_process_requests):
    user = make_user("schema-tester")
    room = make_room("room", name="Room")
    make_member(user, room, role="owner")
    make_messages(room, user, 5)
    return str(AccessToken.for_user(user))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_endpoint_answers_as_documented(case, token):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CONFORMANCE)


@pytest.mark.parametrize(
    "path", ["/api/rooms/{slug}/", "/api/rooms/{slug}/members/", "/api/rooms/{slug}/messages/"]
)
def test_an_existing_rooms_answers_are_as_documented(path, token):
    """Generated slugs seldom name the one room that exists, so its 200 answers
    are checked here on purpose (a history page was once documented as one message)."""
    case = schema[path]["GET"].Case(path_parameters={"slug": "room"})
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"}, checks=CONFORMANCE
    )
    assert response.status_code == 200


def test_schema_documents_every_endpoint():
    paths = set(schema.raw_schema["paths"])
    assert paths >= {
        "/api/auth/register/",
        "/api/auth/token/",
        "/api/auth/token/refresh/",
        "/api/auth/logout/",
        "/api/rooms/",
        "/api/rooms/{slug}/",
        "/api/rooms/{slug}/join/",
        "/api/rooms/{slug}/leave/",
        "/api/rooms/{slug}/members/",
        "/api/rooms/{slug}/members/{username}/",
        "/api/rooms/{slug}/messages/",
    }


@pytest.mark.django_db
def test_swagger_ui_is_served_without_a_cdn(client):
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn." not in page
    assert "unpkg" not in page
    assert (
        client.get(
            "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
        ).status_code
        == 200
    )
