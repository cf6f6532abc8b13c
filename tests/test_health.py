"""/healthz says the process is alive; /readyz that the database and channel layer answer."""

import pytest
from django.db import OperationalError

from chatsite import health
from tests.servers import free_port


@pytest.fixture
def closed_redis_layer(settings):
    """The layer the settings choose with REDIS_URL, pointed at a loopback port
    where nothing listens."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.ResilientRedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }


def test_healthz_answers_without_the_database(client):
    # No django_db mark: pytest-django fails any query this view would make.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_checks_the_database_and_the_channel_layer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "channel_layer": "ok"},
    }


@pytest.mark.django_db
def test_readyz_names_a_failing_channel_layer(client, closed_redis_layer):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["channel_layer"] == "error: ConnectionError"


def test_readyz_names_a_failing_database(client, monkeypatch):
    def refuse() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setitem(health.READINESS_CHECKS, "database", refuse)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "database": "error: OperationalError",
        "channel_layer": "ok",
    }


def test_readiness_is_only_read(client):
    assert client.post("/readyz").status_code == 405
