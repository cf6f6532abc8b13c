"""The JSON auth endpoints: register, obtain and refresh JWTs."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.services import UsernameTaken, user_sign_up
from tests.concurrency import while_another_signs_up
from tests.conftest import need_postgres
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def post(api, url: str, body):
    return api.post(url, body, format="json")


def test_register_creates_a_user(api):
    response = api.post(
        "/api/auth/register/", {"username": "zed", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["username"] == "zed"
    assert "password" not in response.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "zed", "password": "123"}, "password"),
        ({"username": "zed", "password": "password"}, "password"),
        ({"username": "zed"}, "password"),
        ({"password": PASSWORD}, "username"),
        ({"username": "has space", "password": PASSWORD}, "username"),
        ({"username": "zed", "password": PASSWORD, "email": "not-an-email"}, "email"),
    ],
)
def test_register_answers_field_errors_as_json(api, body, field):
    response = post(api, "/api/auth/register/", body)
    assert response.status_code == 400
    assert response.json()[field]


def test_register_refuses_a_taken_username(api, user):
    response = api.post(
        "/api/auth/register/", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["username"] == ["A user with that username already exists."]


def test_register_refuses_a_username_taken_in_another_case(api, user):
    response = post(api, "/api/auth/register/", {"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 400
    assert response.json()["username"] == ["A user with that username already exists."]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["zed", "ZED"])
def test_register_that_loses_the_race_for_its_name_is_400(api, name):
    """Another sign-up for the name, or for the name in another case."""
    need_postgres()
    body = {"username": name, "password": PASSWORD}
    response = while_another_signs_up("zed", lambda: post(api, "/api/auth/register/", body))
    assert response.status_code == 400
    assert response.json() == {
        "username": ["A user with that username already exists."],
        "code": "invalid",
    }
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["zed"]


def test_the_database_refuses_a_name_that_differs_only_in_case(user):
    """What decides a race that both sign-ups' checks passed."""
    with pytest.raises(UsernameTaken):
        user_sign_up(username="ALICE", password=PASSWORD)
    assert get_user_model().objects.filter(username__iexact="alice").count() == 1


def test_token_then_refresh(api, user):
    tokens = api.post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert tokens.status_code == 200
    assert set(tokens.json()) >= {"access", "refresh"}
    refreshed = api.post(
        "/api/auth/token/refresh/", {"refresh": tokens.json()["refresh"]}, format="json"
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["access"]


def test_token_with_wrong_password_is_401_json(api, user):
    response = api.post(
        "/api/auth/token/", {"username": "alice", "password": "nope"}, format="json"
    )
    assert response.status_code == 401
    assert response.json()["detail"]


def test_refresh_with_garbage_is_401_json(api):
    response = post(api, "/api/auth/token/refresh/", {"refresh": "garbage"})
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_register_rejects_malformed_json(api):
    response = api.post("/api/auth/register/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"]


def test_inactive_user_gets_no_token(api):
    make_user("sleepy", is_active=False)
    response = api.post(
        "/api/auth/token/", {"username": "sleepy", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 401
