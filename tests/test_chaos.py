"""Chaos: no acknowledged message is lost, none is delivered twice, none out of order.

Two Daphne processes share PostgreSQL and a Redis of the test's own. Clients
spread over both send at a steady rate while the test cuts random client
sockets, restarts one Daphne process and restarts Redis (empty). At the end,
checked against the database: every acknowledged message is stored once, and
every client was handed the room's messages exactly once, in order.

`make chaos` runs it bigger (CHAOS_CLIENTS, CHAOS_SECONDS; 6 clients for 12 s by
default here, 24 for 60 s from make: on 2 cores the clients, both servers,
Redis and PostgreSQL share the machine, and 40 clients at 4 messages a second
each, 6,400 deliveries a second, is more than the test's own client process
keeps up with).
"""

import asyncio
import itertools
import os
import random
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from chat.client import ChatClient
from chat.models import Message
from tests.conftest import need_postgres, started_private_redis
from tests.factories import make_room, make_user
from tests.servers import DaphneProcess

CLIENTS = int(os.environ.get("CHAOS_CLIENTS", "6"))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "12"))
SEND_INTERVAL = 0.25  # per client: 4 messages a second each
# Every wait below is bounded; the whole test too, as `make chaos` makes it longer.
ACK_WAIT, CONVERGE_WAIT, CLOSE_WAIT = 60, 120, 30

pytestmark = [
    pytest.mark.services,
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(SECONDS + ACK_WAIT + CONVERGE_WAIT + CLOSE_WAIT + 120),
]


@pytest.fixture
def chaos_stack(transactional_db):
    need_postgres()
    redis_server = started_private_redis()
    # Generous send limits: the rate limiter is not under test here.
    env = {"REDIS_URL": redis_server.url, "SEND_RATE": "100", "SEND_BURST": "100"}
    servers = [DaphneProcess(**env), DaphneProcess(**env)]
    try:
        for server in servers:
            server.start()
        yield servers, redis_server
    finally:
        for number, server in enumerate(servers):
            server.stop()
            if log_dir := os.environ.get("CHAOS_LOG_DIR"):
                server.log.seek(0)
                Path(log_dir, f"daphne-{number}.log").write_bytes(server.log.read())
            server.log.close()
        redis_server.stop()


def _users(count: int) -> list[tuple[str, str]]:
    users = [make_user(f"chaos{i}") for i in range(count)]
    return [(user.username, str(AccessToken.for_user(user))) for user in users]


async def _sender(client: ChatClient, room: str, stop: asyncio.Event, sent: list[str]) -> None:
    number = 0
    while not stop.is_set():
        number += 1
        sent.append(await client.send(room, f"{client.name} #{number}"))
        await asyncio.sleep(SEND_INTERVAL * random.uniform(0.5, 1.5))  # noqa: S311


async def _chaos(clients, servers, redis_server, stop: asyncio.Event, log: list[str]) -> None:
    started = asyncio.get_running_loop().time()
    restarted_daphne = restarted_redis = False
    while not stop.is_set():
        await asyncio.sleep(random.uniform(0.2, 0.6))  # noqa: S311
        elapsed = asyncio.get_running_loop().time() - started
        victim = random.choice(clients)  # noqa: S311
        await victim.disconnect()
        log.append(f"{elapsed:5.1f}s cut {victim.name}")
        if not restarted_daphne and elapsed > SECONDS / 3:
            restarted_daphne = True
            await database_sync_to_async(servers[1].restart)()
            log.append(f"{elapsed:5.1f}s restarted daphne {servers[1].address}")
        if not restarted_redis and elapsed > 2 * SECONDS / 3:
            restarted_redis = True
            await database_sync_to_async(redis_server.restart)()
            log.append(f"{elapsed:5.1f}s restarted redis")


@pytest.mark.asyncio
async def test_no_acknowledged_message_is_lost_duplicated_or_reordered(chaos_stack):
    servers, redis_server = chaos_stack
    room = await database_sync_to_async(make_room)("chaos")
    users = await database_sync_to_async(_users)(CLIENTS)
    clients = []
    for i, (username, token) in enumerate(users):
        url = f"ws://{servers[i % 2].address}/ws/chat/"
        client = ChatClient(url, token=token, rooms=[room.slug], backoff_max=1.0)
        client.name = username
        clients.append(client)
    runners = [asyncio.create_task(client.run()) for client in clients]
    for client in clients:
        await client.wait_joined()

    stop = asyncio.Event()
    sent = {client.name: [] for client in clients}
    chaos_log: list[str] = []
    tasks = [asyncio.create_task(_sender(c, room.slug, stop, sent[c.name])) for c in clients]
    tasks.append(asyncio.create_task(_chaos(clients, servers, redis_server, stop, chaos_log)))
    await asyncio.sleep(SECONDS)
    stop.set()
    # A send or a restart still waiting this long after the stop is a hang.
    await asyncio.wait_for(asyncio.gather(*tasks), CLOSE_WAIT + 30)

    # Every send is acknowledged in the end (resent across reconnects as needed)...
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    for client in clients:
        try:
            await client.wait_acked(sent[client.name], timeout=ACK_WAIT)
        except TimeoutError:
            pending = {cid: frame["body"] for cid, frame in client.pending.items()}
            pytest.fail(f"{client.name} never had {pending} acknowledged")
    acked_after = loop.time() - stopped

    def stored_ids() -> list[int]:
        return list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))

    stored = await database_sync_to_async(stored_ids)()
    # ...and every client ends up with exactly the stored messages.
    # Clients behind (a big run on a small machine) catch up in time.
    while loop.time() - stopped < ACK_WAIT + CONVERGE_WAIT:
        if all([m["id"] for m in c.messages[room.slug]] == stored for c in clients):
            break
        await asyncio.sleep(0.1)
    converged_after = loop.time() - stopped

    for client in clients:
        await client.close()
    _, running = await asyncio.wait(runners, timeout=CLOSE_WAIT)
    assert not running, f"{len(running)} clients still running {CLOSE_WAIT} s after close()"

    acked = {cid: m["id"] for c in clients for cid, m in c.acked.items()}
    lost = [cid for cid, message_id in acked.items() if message_id not in set(stored)]
    report = {
        "clients": CLIENTS,
        "seconds": SECONDS,
        "sent": sum(len(ids) for ids in sent.values()),
        "acked": len(acked),
        "stored": len(stored),
        "acked_but_lost": len(lost),
        "reconnects": sum(c.connections - 1 for c in clients),
        "all_acked_after_s": round(acked_after, 2),
        "all_delivered_after_s": round(converged_after, 2),
    }
    per_client = []
    for client in clients:
        delivered = [m["id"] for m in client.messages[room.slug]]
        per_client.append(
            {
                "client": client.name,
                "delivered": len(delivered),
                "missing": len(set(stored) - set(delivered)),
                "duplicated": len(delivered) - len(set(delivered)),
                "out_of_order": sum(1 for a, b in itertools.pairwise(delivered) if b < a),
                "first_inversion": next(
                    (
                        [(a["id"], a["seq"]), (b["id"], b["seq"])]
                        for a, b in itertools.pairwise(client.messages[room.slug])
                        if b["id"] < a["id"]
                    ),
                    None,
                ),
            }
        )
    print("\nchaos:", report)
    print("chaos events:", *chaos_log, sep="\n  ")
    for row in per_client:
        print("chaos client:", row)

    assert report["acked"] == report["sent"]
    assert report["acked_but_lost"] == 0
    assert report["stored"] == report["sent"]  # each send stored exactly once
    for row in per_client:
        assert (row["missing"], row["duplicated"], row["out_of_order"]) == (0, 0, 0), row
