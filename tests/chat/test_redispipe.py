"""The layer's scripts on one pipelined connection (chat.redispipe), against a real Redis."""

import asyncio
import signal
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat.redispipe import CLIENT_NAME, ScriptPipe, pack
from tests.conftest import need_redis, started_private_redis

ECHO = "return {KEYS[1], ARGV[1], ARGV[2]}"
SET = "redis.call('SET', KEYS[1], ARGV[1], 'EX', 60) return redis.call('GET', KEYS[1])"


def _kwargs(url: str, **options) -> dict:
    return {**aioredis.ConnectionPool.from_url(url).connection_kwargs, **options}


async def _pipe_id(pipe: ScriptPipe, client: aioredis.Redis) -> int:
    """The id Redis gives the pipe's connection, found by its address and name."""
    host, port = pipe.protocol.transport.get_extra_info("sockname")[:2]
    (mine,) = [
        c
        for c in await client.client_list()
        if c["addr"] == f"{host}:{port}" and c["name"] == CLIENT_NAME
    ]
    return int(mine["id"])


def test_a_command_is_packed_as_redis_reads_it():
    assert pack(b"EVALSHA", "ab", 2, 1.5) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$3\r\n1.5\r\n"
    )
    with pytest.raises(TypeError):
        pack(b"SET", True)


@pytest.mark.asyncio
async def test_calls_made_together_share_one_connection_and_get_their_own_replies():
    url = need_redis()
    pipe = ScriptPipe(_kwargs(url))
    replies = await asyncio.gather(*(pipe.run(ECHO, [f"k{n}"], [n, "é"]) for n in range(200)))
    assert replies == [[f"k{n}".encode(), str(n).encode(), "é".encode()] for n in range(200)]
    client = aioredis.Redis.from_url(url)
    try:
        connection = await _pipe_id(pipe, client)
        await asyncio.gather(*(pipe.run(ECHO, ["k"], [n, n]) for n in range(10)))
        assert await _pipe_id(pipe, client) == connection  # the same, still
    finally:
        pipe.close()
        await client.aclose()


@pytest.mark.asyncio
async def test_a_script_redis_forgot_is_sent_in_full_and_kept():
    url = need_redis()
    pipe, client = ScriptPipe(_kwargs(url)), aioredis.Redis.from_url(url)
    source = f"return '{uuid.uuid4().hex}'"  # a script Redis cannot know yet
    try:
        assert await pipe.run(source, [], []) == source.split("'")[1].encode()
        assert await client.script_exists(pipe.shas[source].decode()) == [True]
    finally:
        pipe.close()
        await client.aclose()


@pytest.mark.asyncio
async def test_an_error_reply_raises_and_leaves_the_connection_serving():
    pipe = ScriptPipe(_kwargs(need_redis()))
    try:
        with pytest.raises(ResponseError, match="boom"):
            await pipe.run("return redis.error_reply('boom')", [], [])
        assert await pipe.run(ECHO, ["k"], [1, 2]) == [b"k", b"1", b"2"]
    finally:
        pipe.close()


@pytest.fixture
def paused_redis():
    """A redis-server of the test's own, and a way to freeze it (SIGSTOP):
    the calls then sent wait, in flight, for replies that do not come."""
    server = started_private_redis()
    yield server
    server.process.send_signal(signal.SIGCONT)
    server.stop()


@pytest.mark.asyncio
async def test_a_connection_closed_while_idle_is_replaced_without_a_failed_call():
    url = need_redis()
    pipe, client = ScriptPipe(_kwargs(url)), aioredis.Redis.from_url(url)
    try:
        await pipe.run(ECHO, ["k"], [1, 2])
        first = await _pipe_id(pipe, client)
        await client.client_kill_filter(_id=first)
        await asyncio.sleep(0.05)  # the close reaches this end
        assert await pipe.run(ECHO, ["k"], [1, 2]) == [b"k", b"1", b"2"]
        assert await _pipe_id(pipe, client) != first
    finally:
        pipe.close()
        await client.aclose()


@pytest.mark.asyncio
async def test_calls_in_flight_fail_when_redis_goes_and_the_next_connects_again(paused_redis):
    pipe = ScriptPipe(_kwargs(paused_redis.url, socket_timeout=10))
    try:
        assert await pipe.run(ECHO, ["k"], [1, 2]) == [b"k", b"1", b"2"]
        paused_redis.process.send_signal(signal.SIGSTOP)
        calls = [asyncio.ensure_future(pipe.run(ECHO, ["k"], [n, n])) for n in range(3)]
        await asyncio.sleep(0.1)
        assert not any(call.done() for call in calls)  # sent, waiting for their replies
        paused_redis.process.kill()  # its sockets close with it
        paused_redis.process.wait()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
        paused_redis.start()
        assert await pipe.run(ECHO, ["k"], [3, 4]) == [b"k", b"3", b"4"]
    finally:
        pipe.close()


@pytest.mark.asyncio
async def test_a_redis_that_does_not_answer_times_out_every_waiting_call(paused_redis):
    pipe = ScriptPipe(_kwargs(paused_redis.url, socket_timeout=0.2))
    try:
        await pipe.run(ECHO, ["k"], [1, 2])
        paused_redis.process.send_signal(signal.SIGSTOP)
        calls = [pipe.run(ECHO, ["k"], [n, n]) for n in range(3)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(outcome, RedisTimeoutError) for outcome in outcomes)
        paused_redis.process.send_signal(signal.SIGCONT)
        # The late replies went with the closed connection: a new one answers.
        assert await pipe.run(ECHO, ["k"], [3, 4]) == [b"k", b"3", b"4"]
    finally:
        pipe.close()


@pytest.mark.asyncio
async def test_the_connection_uses_the_urls_database():
    url = need_redis()
    db = 1 if aioredis.ConnectionPool.from_url(url).connection_kwargs.get("db", 0) != 1 else 2
    pipe = ScriptPipe(_kwargs(url, db=db))
    client = aioredis.Redis(connection_pool=aioredis.ConnectionPool(**_kwargs(url, db=db)))
    key = f"test-redispipe-{uuid.uuid4().hex}"
    try:
        assert await pipe.run(SET, [key], ["here"]) == b"here"
        assert await client.get(key) == b"here"
    finally:
        await client.delete(key)
        pipe.close()
        await client.aclose()


@pytest.mark.asyncio
async def test_a_redis_that_is_not_there_is_a_connection_error():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # the port is free again: nothing listens
    pipe = ScriptPipe({"host": "127.0.0.1", "port": port, "socket_connect_timeout": 1})
    with pytest.raises(RedisConnectionError):
        await pipe.run(ECHO, ["k"], [1, 2])
