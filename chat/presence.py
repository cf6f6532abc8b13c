"""Who is online in each room, shared by every server process.

An entry is one socket in one room: (username, channel name) with an expiry.
A user is online while any of their sockets is; so a second tab does not
announce them twice, and closing one of two tabs does not make them vanish.
Each process refreshes its sockets' entries (chat.heartbeat), so the entries
of a process that died without cleaning up expire after PRESENCE_TTL. Expired
entries stay until a living process with sockets in the room sweeps them
(its heartbeat, a beat's interval after they expired): the sweep removes them
and names the users who have no entry left, so that the room hears they went
offline. One process removes each entry, so one announces it.

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

from chat.sharedstate import client_script, loop_client, shared_store

logger = logging.getLogger(__name__)

SEPARATOR = "\x1f"  # never in a Django username


SocketRooms = tuple[list[int], str, str]  # a socket's room ids, username, channel
Entry = tuple[int, str, str]  # room id, username, channel


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

    def _live(self, room_id: int) -> list[str]:
        now = time.monotonic()
        return [e for e, expires in self.rooms.get(room_id, {}).items() if expires > now]

    async def add(self, room_id: int, username: str, channel: str) -> Joined:
        entries = self.rooms.setdefault(room_id, {})
        entries[_entry(username, channel)] = time.monotonic() + settings.PRESENCE_TTL
        online = self._live(room_id)
        return Joined(online=_users(online), first=_count(online, username) == 1)

    async def remove(self, room_id: int, username: str, channel: str) -> bool:
        """Drop the socket; True when it was the user's last one in the room."""
        entries = self.rooms.get(room_id, {})
        entries.pop(_entry(username, channel), None)
        if not entries:
            self.rooms.pop(room_id, None)
        return _count(self._live(room_id), username) == 0

    async def refresh_many(self, sockets: list[SocketRooms]) -> list[Entry]:
        expires = time.monotonic() + settings.PRESENCE_TTL
        missing = []
        for room_ids, username, channel in sockets:
            for room_id in room_ids:
                entries = self.rooms.get(room_id, {})
                entry = _entry(username, channel)
                if entry in entries:
                    entries[entry] = expires
                else:
                    missing.append((room_id, username, channel))
        return missing

    async def sweep(self, room_ids: list[int]) -> dict[int, list[str]]:
        before, gone = _swept_before(time.monotonic()), {}
        for room_id in room_ids:
            entries = self.rooms.get(room_id, {})
            expired = [entry for entry, expires in entries.items() if expires <= before]
            for entry in expired:
                del entries[entry]
            if not entries:
                self.rooms.pop(room_id, None)
            if users := sorted(set(_users(expired)) - set(_users(list(entries)))):
                gone[room_id] = users
        return gone

    async def online(self, room_id: int) -> list[str]:
        return _users(self._live(room_id))


def _swept_before(now: float) -> float:
    """What a sweep at `now` takes: entries expired a beat's interval ago, so
    that a process a little late with its beat (or with a clock a little
    behind the sweeper's) is not announced offline, then back."""
    return now - settings.PRESENCE_TTL / 3


# Entries renewed per pipeline, and rooms swept per script call: packed and
# parsed on the event loop at once; between them the loop serves the sockets.
REFRESH_BATCH = 100

# KEYS: rooms' presence sets; ARGV: a moment, SEPARATOR. Removes the entries
# expired by then and returns {i, user, ...}: each user of room KEYS[i] whose entries
# all expired. Atomic, so that of several processes sweeping a room, one
# names each user.
SWEEP_SCRIPT = """
local function user(entry)
  return string.sub(entry, 1, string.find(entry, ARGV[2], 1, true) - 1)
end
local gone = {}
for i, key in ipairs(KEYS) do
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1])
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
    local live, named = {}, {}
    for _, entry in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      live[user(entry)] = true
    end
    for _, entry in ipairs(expired) do
      local name = user(entry)
      if not live[name] and not named[name] then
        named[name] = true
        table.insert(gone, i)
        table.insert(gone, name)
      end
    end
  end
end
return gone
"""


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
        # Expired entries are left to the sweep, which announces their users.
        key, now = self._key(room_id), time.time()
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.zadd(key, {_entry(username, channel): now + settings.PRESENCE_TTL})
                pipe.expire(key, settings.PRESENCE_TTL)
                pipe.zrangebyscore(key, now, "+inf")
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

    async def refresh_many(self, sockets: list[SocketRooms]) -> list[Entry]:
        """Renew each (room ids, username, channel) socket's entries, a pipelined
        round trip per REFRESH_BATCH entries. Returns the entries that were
        gone (swept while their process was stalled, or Redis restarted): a
        renewal never puts one back, as the socket may have left its room
        since its rooms were read (chat.heartbeat decides)."""
        expires = time.time() + settings.PRESENCE_TTL
        entries = [
            (room_id, username, channel)
            for room_ids, username, channel in sockets
            for room_id in room_ids
        ]
        missing = []
        for start in range(0, len(entries), REFRESH_BATCH):
            batch = entries[start : start + REFRESH_BATCH]
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for room_id, username, channel in batch:
                        key = self._key(room_id)
                        # XX: only an entry that is there; CH: say whether it was.
                        pipe.zadd(key, {_entry(username, channel): expires}, xx=True, ch=True)
                        pipe.expire(key, settings.PRESENCE_TTL)
                    results = await pipe.execute()
            except RedisError:
                # A missed refresh only risks an early expiry; the next one retries.
                logger.warning("presence refresh failed", exc_info=True)
                continue
            missing += [entry for entry, had in zip(batch, results[::2], strict=True) if not had]
        return missing

    async def sweep(self, room_ids: list[int]) -> dict[int, list[str]]:
        """Remove the rooms' expired entries; {room id: users with none left}."""
        script = client_script(self._client(), SWEEP_SCRIPT)
        gone: dict[int, list[str]] = {}
        for start in range(0, len(room_ids), REFRESH_BATCH):
            batch = room_ids[start : start + REFRESH_BATCH]
            try:
                named = await script(
                    keys=[self._key(i) for i in batch],
                    args=[_swept_before(time.time()), SEPARATOR],
                )
            except RedisError:
                logger.warning("presence sweep failed", exc_info=True)
                continue
            for index, user in zip(named[::2], named[1::2], strict=True):
                gone.setdefault(batch[index - 1], []).append(user)
        return gone

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
