"""Sign-up, login and logout in the browser pages."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.concurrency import while_another_signs_up
from tests.conftest import need_postgres
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.django_db


def test_signup_creates_the_account_and_logs_in(client):
    response = client.post(
        reverse("signup"),
        {"username": "carol", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("chat:room-list")
    assert get_user_model().objects.filter(username="carol").exists()
    assert client.get(reverse("chat:room-list")).status_code == 200


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"username": "dave", "password1": "short", "password2": "short"}, "password2"),
        ({"username": "dave", "password1": PASSWORD, "password2": PASSWORD + "x"}, "password2"),
        ({"username": "bad name!", "password1": PASSWORD, "password2": PASSWORD}, "username"),
        ({"username": "", "password1": PASSWORD, "password2": PASSWORD}, "username"),
    ],
)
def test_signup_shows_form_errors(client, data, field):
    response = client.post(reverse("signup"), data)
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert not get_user_model().objects.filter(username=data["username"]).exists()


def test_signup_refuses_a_taken_username(client, user):
    response = client.post(
        reverse("signup"), {"username": "alice", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 200
    assert response.context["form"].errors["username"]


@pytest.mark.django_db(transaction=True)
def test_signup_that_loses_the_race_for_its_name_shows_a_form_error(client):
    need_postgres()
    data = {"username": "zed", "password1": PASSWORD, "password2": PASSWORD}
    response = while_another_signs_up("zed", lambda: client.post(reverse("signup"), data))
    assert response.status_code == 200
    assert response.context["form"].errors["username"] == [
        "A user with that username already exists."
    ]
    assert "_auth_user_id" not in client.session  # not logged in as the other zed


def test_login_and_logout(client):
    make_user("erin")
    response = client.post(reverse("login"), {"username": "erin", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("chat:room-list")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("chat:room-list")).status_code == 302


def test_login_with_wrong_password_shows_an_error(client):
    make_user("erin")
    response = client.post(reverse("login"), {"username": "erin", "password": "wrong"})
    assert response.status_code == 200
    assert response.context["form"].non_field_errors()
