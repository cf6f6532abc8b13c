"""/metrics shows what this process did: sockets, rooms, messages stored and
delivered, fan-out latency, how long rounds of posts took to store, errors by
code and HTTP requests; and only to the
addresses or the token the settings allow.

Prometheus' registry is global to the process and other tests count into it
too, so these tests compare two scrapes, never absolute values.
"""

import asyncio

import pytest
from channels.db import database_sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Room
from tests.api import api_client
from tests.concurrency import another_session
from tests.conftest import need_postgres
from tests.factories import make_member
from tests.ws import connect

Samples = dict[tuple[str, tuple], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def scrape(client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


async def ascrape(async_client) -> Samples:
    response = await async_client.get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_metrics_count_the_sockets_rooms_and_messages_of_a_chat(
    channel_backend, async_client, user, other_user, room
):
    before = await ascrape(async_client)
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        during = await ascrape(async_client)
        await alice.post(room.slug, "hello bob", "c-1")
        await alice.receive_type("message")  # the acknowledgement, through the fan-out too
        await bob.receive_type("message")
    after = await ascrape(async_client)

    assert delta(during, before, "chat_sockets_open") == 2
    assert delta(during, before, "chat_room_subscriptions") == 2
    assert delta(after, before, "chat_sockets_open") == 0
    assert delta(after, before, "chat_room_subscriptions") == 0
    assert delta(after, before, "chat_messages_stored_total") == 1
    assert delta(after, before, "chat_messages_delivered_total") == 2
    assert delta(after, before, "chat_fanout_latency_seconds_count") == 1
    assert delta(after, before, "chat_fanout_latency_seconds_bucket", le="2.5") == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_round_of_posts_is_timed_until_the_database_lets_it_commit(
    async_client, user, room
):
    need_postgres()
    await database_sync_to_async(make_member)(user, room)
    before = await ascrape(async_client)
    async with connect(user) as client:
        await client.join(room.slug)
        elsewhere = await asyncio.to_thread(another_session)
        with elsewhere:  # holds the room's row until the block commits
            await asyncio.to_thread(
                elsewhere.execute,
                f"SELECT id FROM {Room._meta.db_table} WHERE id = %s FOR UPDATE",  # noqa: S608
                [room.id],
            )
            await client.post(room.slug, "held up", "c-1")
            await asyncio.sleep(0.3)
        assert (await client.receive_until("message"))["client_id"] == "c-1"
    after = await ascrape(async_client)

    assert delta(after, before, "chat_message_round_seconds_count") == 1
    assert delta(after, before, "chat_message_round_seconds_bucket", le="0.25") == 0
    assert delta(after, before, "chat_message_round_seconds_bucket", le="2.5") == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_error_frames_are_counted_by_code(async_client, user, room):
    before = await ascrape(async_client)
    async with connect(user) as client:
        await client.send_text("not json")
        await client.receive_type("error")
        await client.send({"type": "leave", "room": room.slug})
        await client.receive_type("error")
    after = await ascrape(async_client)
    assert delta(after, before, "chat_errors_total", code="invalid_json", source="socket") == 1
    assert delta(after, before, "chat_errors_total", code="not_joined", source="socket") == 1


@pytest.mark.django_db
def test_api_errors_are_counted_by_code(client, user):
    before = scrape(client)
    assert api_client(user).get("/api/rooms/no-such-room/").status_code == 404
    assert api_client().get("/api/rooms/").status_code == 401
    after = scrape(client)
    assert delta(after, before, "chat_errors_total", code="room_not_found", source="api") == 1
    assert delta(after, before, "chat_errors_total", code="not_authenticated", source="api") == 1


def test_http_requests_are_counted_by_method_and_status(client):
    before = scrape(client)
    assert client.get("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405
    # Any token is a method to HTTP: unknown ones share one label value.
    assert client.generic("BREW", "/healthz").status_code == 405
    after = scrape(client)
    assert delta(after, before, "chat_http_requests_total", method="GET", status="200") >= 1
    assert delta(after, before, "chat_http_requests_total", method="POST", status="405") == 1
    assert delta(after, before, "chat_http_requests_total", method="other", status="405") == 1
    assert delta(after, before, "chat_http_request_duration_seconds_count", method="POST") == 1


def test_metrics_are_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-cache" in response["Cache-Control"]
    assert "# TYPE chat_sockets_open gauge" in response.content.decode()


def test_metrics_answer_a_scraper_that_names_the_process_not_the_site(client, settings):
    # Prometheus asks each process for http://<its address>:8000/metrics.
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/metrics", HTTP_HOST="10.0.0.5:8000").status_code == 200
    assert client.get("/healthz", HTTP_HOST="10.0.0.5:8000").status_code == 400


def test_metrics_refuse_an_address_not_allowed(client):
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403
    assert b"chat_" not in response.content


def test_metrics_answer_an_allowed_network(client, settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1", "10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="11.1.2.3").status_code == 403


def test_metrics_answer_the_token_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "scrape-secret-0123456789"
    right = {"Authorization": "Bearer scrape-secret-0123456789"}
    wrong = {"Authorization": "Bearer scrape-secret-9876543210"}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", headers=right).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", headers=wrong).status_code == 403


def test_no_token_is_accepted_when_none_is_set(client, settings):
    settings.METRICS_TOKEN = ""
    headers = {"Authorization": "Bearer "}
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", headers=headers).status_code == 403


def test_metrics_are_not_found_when_disabled(client, settings):
    settings.METRICS_ENABLED = False
    assert client.get("/metrics").status_code == 404
