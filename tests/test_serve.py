"""`python -m chatsite.serve`: Daphne on uvloop's event loop, as `make run`, the
Dockerfile, `make stack`, these tests' servers (tests.servers) and the bench
start it."""

import asyncio
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import websockets
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from chatsite import serve
from tests.servers import DaphneProcess, run_python

DAPHNE_LOOP = (
    "from daphne import server\n"
    "from twisted.internet import reactor\n"
    "assert reactor._asyncioEventloop is server.twisted_loop\n"
    "print(type(server.twisted_loop).__module__)\n"
)


def python(code: str) -> subprocess.CompletedProcess:
    return run_python("-c", code)


def test_serve_puts_daphnes_event_loop_on_uvloop():
    served = python("from chatsite import serve\nserve.install()\n" + DAPHNE_LOOP)
    plain = python(DAPHNE_LOOP)  # the `daphne` command's own
    assert served.returncode == 0, served.stderr
    assert served.stdout.split() == ["uvloop"]
    assert plain.stdout.split() == ["asyncio.unix_events"]


def test_serve_refuses_once_daphne_has_made_its_loop():
    result = python("import daphne.server\nfrom chatsite import serve\nserve.install()\n")
    assert result.returncode != 0
    assert "daphne.server is imported already" in result.stderr


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_served_app_answers_a_socket_and_stops_on_sigterm(user):
    server = DaphneProcess()
    assert server.command()[1:3] == ["-m", "chatsite.serve"]
    server.start()
    try:
        token = await database_sync_to_async(lambda: str(AccessToken.for_user(user)))()
        url = f"ws://{server.address}/ws/chat/"
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            await socket.send('{"type": "typing", "room": "x", "typing": true}')
            answer = await asyncio.wait_for(socket.recv(), 5)
            assert '"not_joined"' in answer
            server.process.terminate()
            # Daphne closes the socket on its way out, and exits by itself.
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), 10)
        code = await asyncio.to_thread(server.process.wait, 10)
        assert code == 0
    finally:
        server.stop()
        server.log.close()


def test_the_process_ends_after_the_grace_whatever_its_threads_wait_for():
    result = python(
        "import threading, time\n"
        "from chatsite import serve\n"
        "threading.Thread(target=time.sleep, args=(60,), name='stuck-request').start()\n"
        "serve.exit_after(0.5, code=3)\n"
    )
    assert result.returncode == 3
    assert "still exiting" in result.stderr
    assert "stuck-request" in result.stderr


def _get_rooms(address: str, token: str) -> int:
    request = urllib.request.Request(
        f"http://{address}/api/rooms/", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - loopback
            return response.status
    except (urllib.error.URLError, OSError):
        return 0  # cut off by the shutdown: what the test expects of some


@pytest.mark.django_db(transaction=True)
def test_sigterm_in_a_burst_of_requests_ends_the_server_promptly(user):
    """Requests in flight when Daphne stops used to leave threads waiting
    for the stopped event loop, and the process waiting for them."""
    token = str(AccessToken.for_user(user))
    server = DaphneProcess()
    server.start()
    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            answers = [pool.submit(_get_rooms, server.address, token) for _ in range(400)]
            while sum(answer.done() for answer in answers) < 20:  # the burst is under way
                time.sleep(0.01)
            server.process.terminate()
            stopped = time.monotonic()
            code = server.process.wait(timeout=30)
            took = time.monotonic() - stopped
            for answer in answers:
                answer.cancel()
        assert code == 0
        assert took < serve.SHUTDOWN_GRACE + 5
    finally:
        server.stop()
        server.log.close()
