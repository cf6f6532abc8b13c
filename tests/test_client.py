"""The Python chat client (chat.client) against a WebSocket server of the test's own."""

import asyncio
import json
import logging

import pytest
from websockets.asyncio.server import serve

from chat.client import ChatClient


@pytest.mark.asyncio
async def test_closing_while_a_connection_is_being_made_still_ends_run():
    handshaking, release = asyncio.Event(), asyncio.Event()

    async def hold_the_handshake(connection, request):
        handshaking.set()
        await release.wait()

    async def keep_open(connection):
        await connection.wait_closed()

    async with serve(keep_open, "127.0.0.1", 0, process_request=hold_the_handshake) as server:
        port = server.sockets[0].getsockname()[1]
        client = ChatClient(f"ws://127.0.0.1:{port}/", token="t", rooms=["general"])
        runner = asyncio.create_task(client.run())
        await asyncio.wait_for(handshaking.wait(), 5)

        await client.close()
        release.set()  # the connection now opens, after close()

        await asyncio.wait_for(runner, 5)
        assert client.connections == 0


@pytest.mark.asyncio
async def test_the_token_stays_out_of_websockets_debug_log(caplog):
    headers = asyncio.get_running_loop().create_future()

    async def note_the_headers(connection, request):
        headers.set_result(request.headers)

    async def keep_open(connection):
        await connection.wait_closed()

    caplog.set_level(logging.DEBUG, logger="websockets.client")
    async with serve(keep_open, "127.0.0.1", 0, process_request=note_the_headers) as server:
        port = server.sockets[0].getsockname()[1]
        client = ChatClient(f"ws://127.0.0.1:{port}/", token="s3cret-token", rooms=[])
        runner = asyncio.create_task(client.run())
        received = await asyncio.wait_for(headers, 5)
        await client.close()
        await asyncio.wait_for(runner, 5)
    assert received["Authorization"] == "Bearer s3cret-token"  # it was sent
    assert "> Authorization: [redacted]" in caplog.text  # and logged, without it
    assert "s3cret-token" not in caplog.text


@pytest.mark.asyncio
async def test_a_join_answered_unavailable_is_asked_again():
    joins = []

    async def refuse_the_first_join(connection):
        async for text in connection:
            frame = json.loads(text)
            if frame["type"] != "join":
                continue
            joins.append(frame)
            if len(joins) == 1:
                answer = {"type": "error", "code": "unavailable", "detail": "Briefly away."}
                answer |= {"ref": frame["room"], "retry_after": 0.1}
            else:
                answer = {"type": "joined", "room": frame["room"], "online": []}
                answer |= {"messages": [], "seq": 0}
            await connection.send(json.dumps(answer))

    async with serve(refuse_the_first_join, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = ChatClient(f"ws://127.0.0.1:{port}/", token="t", rooms=["general"])
        runner = asyncio.create_task(client.run())
        try:
            await client.wait_joined(timeout=5)
        finally:
            await client.close()
            await asyncio.wait_for(runner, 5)
    assert [join["room"] for join in joins] == ["general", "general"]
    assert client.connections == 1  # asked again on the same socket
