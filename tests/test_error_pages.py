"""Errors that never reach a view: JSON under /api/ (programs parse it), HTML elsewhere."""

import pytest
from django.test import RequestFactory

from chatsite import errors
from tests.api import api_client

pytestmark = pytest.mark.django_db


def test_an_unknown_api_url_is_404_json(client):
    response = client.get("/api/no-such-endpoint/")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_an_unknown_page_is_404_html(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_api_body_over_the_upload_limit_is_413_json(user, room, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = api_client(user).post(
        f"/api/rooms/{room.slug}/messages/", {"body": "x" * 20_000}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def test_an_api_request_for_a_host_not_allowed_is_400_json(client):
    response = client.get("/api/rooms/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


def test_a_page_for_a_host_not_allowed_is_400_html(client):
    response = client.get("/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


def test_a_crash_under_api_is_500_json():
    response = errors.server_error(RequestFactory().get("/api/rooms/"))
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert b'"code": "server_error"' in response.content


def test_a_crash_elsewhere_is_the_html_500_page():
    response = errors.server_error(RequestFactory().get("/rooms/"))
    assert response.status_code == 500
    assert b"<h1>Server Error (500)</h1>" in response.content
