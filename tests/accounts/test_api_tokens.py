"""The JWT lifecycle: obtain, use, refresh with rotation, blacklist, logout, throttle."""

import pytest

from accounts.api.throttling import AuthRateThrottle
from tests.api import api_client
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def obtain(api, username="alice"):
    response = api.post(
        "/api/auth/token/", {"username": username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    return response.json()


def test_access_token_authenticates_api_requests(user):
    api = api_client()
    tokens = obtain(api)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api.get("/api/rooms/").status_code == 200


def test_refresh_rotates_and_the_old_refresh_token_is_retired(user):
    api = api_client()
    tokens = obtain(api)
    rotated = api.post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != tokens["refresh"]
    reused = api.post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert reused.status_code == 401
    assert reused.json()["code"] == "token_not_valid"


def test_logout_blacklists_the_refresh_token(user):
    api = api_client()
    tokens = obtain(api)
    assert (
        api.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json").status_code
        == 200
    )
    again = api.post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401


def test_an_access_token_is_not_a_refresh_token(user):
    api = api_client()
    tokens = obtain(api)
    response = api.post("/api/auth/token/refresh/", {"refresh": tokens["access"]}, format="json")
    assert response.status_code == 401


def test_garbage_bearer_token_is_401(user):
    api = api_client()
    api.credentials(HTTP_AUTHORIZATION="Bearer garbage")
    response = api.get("/api/rooms/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_auth_endpoints_are_throttled_per_address(user, monkeypatch):
    monkeypatch.setattr(AuthRateThrottle, "THROTTLE_RATES", {"auth": "3/minute"})
    api = api_client()
    wrong = {"username": "alice", "password": "guess"}
    codes = [api.post("/api/auth/token/", wrong, format="json").status_code for _ in range(3)]
    # The limit spans every auth endpoint: registering counts too.
    blocked = api.post(
        "/api/auth/register/", {"username": "x", "password": PASSWORD}, format="json"
    )
    assert codes == [401, 401, 401]
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "throttled"
