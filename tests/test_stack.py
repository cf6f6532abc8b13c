"""The production topology on loopback (`make stack`): clients talk to nginx only, and
two Daphne processes behind it act as one chat server.

The stack is deploy/stack.py's, started on free ports with a database and a Redis
prefix of its own, and production settings (DEBUG off). To know which process
serves a socket, the test adds one server-level snippet to the stack's nginx,
`add_header X-Upstream $upstream_addr`; the site config is the production one.
Its `least_conn` balancing sends a second open socket to the other process.
"""

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
import websockets
from django.conf import settings

from deploy import stack as deploy_stack
from tests.conftest import REQUIRE_SERVICES, need_postgres, need_redis
from tests.servers import BASE_DIR, free_port
from tests.ws import receive_frame

pytestmark = pytest.mark.services

PASSWORD = "correct-horse-battery-9"
UPSTREAM_HEADER = "add_header X-Upstream $upstream_addr always;\n"


def _postgres_server_url() -> str:
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}"


def _running(pid: int) -> bool:
    """Alive, not merely a zombie waiting for its parent (this process) to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    need_redis()
    need_postgres()
    nginx = deploy_stack.nginx_binary()
    if nginx is None:
        if REQUIRE_SERVICES:
            pytest.fail("nginx is required: apt-get install nginx")
        pytest.skip("needs Debian's nginx")
    suffix = uuid.uuid4().hex[:10]
    the_stack = deploy_stack.Stack(
        state_dir=tmp_path_factory.mktemp("stack"),
        port=free_port(),
        daphne_ports=(free_port(), free_port()),
        database=f"chat_stack_test_{suffix}",
        postgres_url=_postgres_server_url(),
        redis_url=settings.REDIS_URL,
        redis_prefix=f"test-stack-{suffix}",
    )
    the_stack.snippets_dir.mkdir(parents=True)
    (the_stack.snippets_dir / "x-upstream.conf").write_text(UPSTREAM_HEADER)
    started: list[int] = []
    try:
        deploy_stack.start(the_stack, nginx=nginx)
        started = [int(f.read_text()) for f in the_stack.state_dir.glob("*.pid")]
        yield the_stack
    finally:
        deploy_stack.stop(the_stack, quiet=True)
        # Every process it started has ended (a stop that no longer recognised
        # its own Daphne processes once left them running).
        assert not [pid for pid in started if _running(pid)]
        deploy_stack.database_drop(the_stack)
        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(f"{the_stack.redis_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _http(stack, path: str, body: dict | None = None) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a GET, or of a POST when there is a body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.port}{path}",
        data=data,
        headers={"Content-Type": "application/json"} if data else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw, status, headers = response.read(), response.status, response.headers
    except urllib.error.HTTPError as error:
        raw, status, headers = error.read(), error.code, error.headers
    return status, dict(headers), json.loads(raw) if "json" in headers["Content-Type"] else {}


def _sign_up(stack, username: str) -> str:
    """Register through nginx and return an access token."""
    status, _, body = _http(
        stack, "/api/auth/register/", {"username": username, "password": PASSWORD}
    )
    assert status == 201, body
    status, _, body = _http(stack, "/api/auth/token/", {"username": username, "password": PASSWORD})
    assert status == 200, body
    return body["access"]


async def _open(stack, token: str):
    """A socket through nginx, and the Daphne process (host:port) serving it."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{stack.port}/ws/chat/",
        additional_headers={"Authorization": f"Bearer {token}"},
    )
    return ws, ws.response.headers["X-Upstream"]


def test_nginx_serves_collected_static_files_itself(stack):
    manifest = json.loads((BASE_DIR / "staticfiles" / "staticfiles.json").read_text())
    status, headers, _ = _http(stack, f"/static/{manifest['paths']['js/chat.js']}")
    assert status == 200
    assert "X-Upstream" not in headers  # from disk, not from a Daphne process
    assert headers["Cache-Control"] == "max-age=315360000"  # a hashed name never changes


def test_health_answers_through_nginx(stack):
    status, headers, body = _http(stack, "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    assert headers["X-Upstream"] in {f"127.0.0.1:{port}" for port in stack.daphne_ports}
    status, _, body = _http(stack, "/readyz")
    assert status == 200
    assert body["checks"] == {"database": "ok", "channel_layer": "ok"}


@pytest.mark.asyncio
async def test_clients_on_two_processes_chat_through_nginx(stack):
    alice_token = _sign_up(stack, "alice")
    bob_token = _sign_up(stack, "bob")
    alice, alice_upstream = await _open(stack, alice_token)
    bob, bob_upstream = await _open(stack, bob_token)
    try:
        assert {alice_upstream, bob_upstream} == {
            f"127.0.0.1:{port}" for port in stack.daphne_ports
        }

        await alice.send(json.dumps({"type": "join", "room": "general"}))
        await receive_frame(alice, "joined")
        await bob.send(json.dumps({"type": "join", "room": "general"}))
        assert (await receive_frame(bob, "joined"))["online"] == ["alice", "bob"]
        presence = await receive_frame(alice, "presence")
        assert (presence["online"], presence["offline"]) == (["bob"], [])

        await alice.send(json.dumps({"type": "message", "room": "general", "body": "hi bob"}))
        to_bob = await receive_frame(bob, "message")
        assert to_bob == await receive_frame(alice, "message")
        assert (to_bob["user"], to_bob["body"]) == ("alice", "hi bob")

        await bob.send(json.dumps({"type": "typing", "room": "general", "typing": True}))
        typing = await receive_frame(alice, "typing")
        assert (typing["user"], typing["typing"]) == ("bob", True)
        await bob.send(json.dumps({"type": "message", "room": "general", "body": "hi alice"}))
        assert (await receive_frame(alice, "message"))["body"] == "hi alice"
        # Bob's acknowledgement: he closes only once his message is stored.
        assert (await receive_frame(bob, "message"))["body"] == "hi alice"

        await bob.close()
        offline = await receive_frame(alice, "presence")
        assert (offline["online"], offline["offline"]) == ([], ["bob"])
    finally:
        await alice.close()
        await bob.close()
