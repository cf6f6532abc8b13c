"""Who is online in each room, shared by every server process.

An entry is one socket in one room: (username, channel name) with an expiry.
A user is online while any of their sockets is; so a second tab does not
announce them twice, and closing one of two tabs does not make them vanish.
Each process refreshes its sockets' entries (chat.heartbeat), so the entries
of a process that died without cleaning up expire after PRESENCE_TTL.

With REDIS_URL set the entries live in Redis (a sorted set per room, scored by
expiry) so that every process sees the same list. Without it the whole app is
one process (the in-memory channel layer cannot span more), and a dict in that
process is the same thing.
"""

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from chat.sharedstate import loop_client, shared_store

logger = logging.getLogger(__name__)

SEPARATOR = "\x1f"  # never in a Django username


@dataclass(frozen=True, slots=True)
class Joined:
    online: list[str]
    first: bool  # the user's first socket in the room: announce them


def _entry(username: str, channel: str) -> str:
    return f"{username}{SEPARATOR}{channel}"


def _users(entries: list[str]) -> list[str]:
    return sorted({entry.split(SEPARATOR, 1)[0] for entry in entries})


class LocalPresence:
    def __init__(self) -> None:
        self.rooms: dict[int, dict[str, float]] = {}

    def _live(self, room_id: int) -> dict[str, float]:
        entries = self.rooms.setdefault(room_id, {})
        now = time.monotonic()
        for entry in [e for e, expires in entries.items() if expires <= now]:
            del entries[entry]
        return entries

    async def add(self, room_id: int, username: str, channel: str) -> Joined:
        entries = self._live(room_id)
        entries[_entry(username, channel)] = time.monotonic() + settings.PRESENCE_TTL
        online = list(entries)
        return Joined(online=_users(online), first=_count(online, username) == 1)

    async def remove(self, room_id: int, username: str, channel: str) -> bool:
        """Drop the socket; True when it was the user's last one in the room."""
        entries = self._live(room_id)
        entries.pop(_entry(username, channel), None)
        return _count(list(entries), username) == 0

    async def refresh_many(self, sockets: list[tuple[list[int], str, str]]) -> None:
        expires = time.monotonic() + settings.PRESENCE_TTL
        for room_ids, username, channel in sockets:
            for room_id in room_ids:
                self._live(room_id)[_entry(username, channel)] = expires

    async def online(self, room_id: int) -> list[str]:
        return _users(list(self._live(room_id)))


# Entries renewed per pipeline: packed and parsed on the event loop at once;
# between pipelines the loop serves the sockets.
REFRESH_BATCH = 100


class RedisPresence:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def _client(self) -> aioredis.Redis:
        return loop_client(self.url, decode_responses=True)

    def _key(self, room_id: int) -> str:
        return f"{self.prefix}:presence:{room_id}"

    # Presence is an aid, not a promise: with Redis down, joins and leaves go
    # on (the user is shown alone, or announced), and the heartbeat restores
    # the entries once Redis is back.

    async def add(self, room_id: int, username: str, channel: str) -> Joined:
        key, now = self._key(room_id), time.time()
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zadd(key, {_entry(username, channel): now + settings.PRESENCE_TTL})
                pipe.expire(key, settings.PRESENCE_TTL)
                pipe.zrange(key, 0, -1)
                *_, entries = await pipe.execute()
        except RedisError:
            logger.warning("presence unavailable", exc_info=True)
            return Joined(online=[username], first=True)
        return Joined(online=_users(entries), first=_count(entries, username) == 1)

    async def remove(self, room_id: int, username: str, channel: str) -> bool:
        key = self._key(room_id)
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.zrem(key, _entry(username, channel))
                pipe.zrangebyscore(key, time.time(), "+inf")
                _, entries = await pipe.execute()
        except RedisError:
            logger.warning("presence unavailable", exc_info=True)
            return True
        return _count(entries, username) == 0

    async def refresh_many(self, sockets: list[tuple[list[int], str, str]]) -> None:
        """Renew each (room ids, username, channel) socket's entries, a pipelined
        round trip per REFRESH_BATCH entries."""
        expires = time.time() + settings.PRESENCE_TTL
        entries = [
            (self._key(room_id), _entry(username, channel))
            for room_ids, username, channel in sockets
            for room_id in room_ids
        ]
        for start in range(0, len(entries), REFRESH_BATCH):
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for key, entry in entries[start : start + REFRESH_BATCH]:
                        pipe.zadd(key, {entry: expires})
                        pipe.expire(key, settings.PRESENCE_TTL)
                    await pipe.execute()
            except RedisError:
                # A missed refresh only risks an early expiry; the next one retries.
                logger.warning("presence refresh failed", exc_info=True)

    async def online(self, room_id: int) -> list[str]:
        try:
            entries = await self._client().zrangebyscore(self._key(room_id), time.time(), "+inf")
        except RedisError:
            logger.warning("presence unavailable", exc_info=True)
            return []
        return _users(entries)


def _count(entries: list[str], username: str) -> int:
    prefix = username + SEPARATOR
    return sum(1 for entry in entries if entry.startswith(prefix))


def get_presence() -> LocalPresence | RedisPresence:
    return shared_store("presence", redis=RedisPresence, local=LocalPresence)
