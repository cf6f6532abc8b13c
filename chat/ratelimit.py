"""Rate limits: the per-user send rate of the socket, and a bucket for one socket.

Each user has a bucket of SEND_BURST tokens refilled at SEND_RATE per second;
a message takes one. The bucket is a row of the database (chat.models.SendRate),
so a user with sockets on several processes gets one budget, not one per
process, and it is taken in the very statement that stores a round of posts
(send_rate_sql, chat.services.amessage_insert_many): one round trip and one
commit for both. It was a Redis script before, a round trip per round that was
a third of the database thread's time and half a millisecond of every
message's latency (docs/performance.md).
"""

import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from chat.exceptions import RateLimited
from chat.models import SendRate


@dataclass(slots=True)
class TokenBucket:
    """One bucket in this process's memory (for what belongs to one socket)."""

    rate: float
    burst: float
    tokens: float = -1.0  # full at the first take
    stamp: float = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# --- the send rate, in the database ------------------------------------------------------
# A bucket is the time it is full again (SendRate.full_at). With `step` =
# 1 / SEND_RATE (what a token is worth in time) and `slack` = (SEND_BURST - 1) *
# step, a message sent at `clock` may go if full_at - clock <= slack, and moves
# full_at to max(full_at, clock) + step. The SQL below takes these as
# parameters. The clock is the posting process's (as a message's created_at):
# machines kept in time agree to milliseconds, and a token is 200 ms. In
# PostgreSQL it is never earlier than the database's once the bucket is
# locked (_NOW_SQL): a round may wait for that lock past its own clock.


def send_rate_params() -> dict:
    step = 1 / settings.SEND_RATE
    return {"clock": time.time(), "step": step, "slack": (settings.SEND_BURST - 1) * step}


def rate_limited(retry_after: float) -> RateLimited:
    retry_after = round(max(retry_after, 0.001), 3)
    return RateLimited(f"Too many messages: retry in {retry_after} s.", retry_after=retry_after)


# The moment a bucket is counted at, in PostgreSQL: evaluated where the
# bucket's row is locked.
_NOW_SQL = "GREATEST(%(clock)s, extract(epoch FROM clock_timestamp())::float8)"


def send_rate_sql() -> str:
    """The common table expressions that take the tokens of a round of posts
    (PostgreSQL), for chat.services' one statement. They read `poster`, the
    posts allowed otherwise (with user_id and n, their order), and define:

    - `ranked`: each post with k, its rank among its user's posts of the round;
    - `allowance`: for each sender, `took` tokens and the bucket's new
      full_at; the bucket is updated (or made, full, for a first post) and
      locked until the commit;
    - `allowed`: the posts that took a token (k <= took).

    A user may have several posts in a round (two sockets): they take tokens
    in order, until none is left. Buckets are locked (and made) in user
    order, all before any message is stored, so that two processes' rounds
    never wait for each other in a circle. A bucket that another process
    made meanwhile is not seen: its user's posts are left out of
    `allowance`, for send_rate_take.
    """
    table = SendRate._meta.db_table
    return f"""
        ranked AS (
            SELECT poster.*, row_number() OVER (PARTITION BY user_id ORDER BY n) AS k
            FROM poster
        ),
        locked AS (
            SELECT b.user_id, b.full_at FROM {table} b
            WHERE b.user_id IN (SELECT user_id FROM ranked)
            ORDER BY b.user_id FOR UPDATE
        ),
        bucket AS (
            -- Read once its bucket is locked (each group's row is in hand):
            -- a round whose clock was read before another's, and whose
            -- statement waited for that one's lock, would count the bucket
            -- at an earlier moment than its last taker did and find a token
            -- fewer. The database's clock, not earlier than the process's.
            SELECT ranked.user_id, l.user_id IS NULL AS new, count(*) AS wanted,
                   l.full_at AS old, {_NOW_SQL} AS now
            FROM ranked LEFT JOIN locked l ON l.user_id = ranked.user_id
            GROUP BY ranked.user_id, l.user_id, l.full_at
        ),
        counted AS (
            SELECT user_id, new, took, now, base + took * %(step)s AS full_at FROM (
                SELECT *, LEAST(
                    wanted, GREATEST(0, floor((now + %(slack)s - base) / %(step)s) + 1)
                ) AS took
                FROM (
                    -- A new bucket is full: as if full at this moment.
                    SELECT bucket.*, GREATEST(COALESCE(old, now), now) AS base FROM bucket
                ) b
            ) b
        ),
        made AS (
            -- In user order too: two rounds making the same buckets wait for
            -- each other's in the same order.
            INSERT INTO {table} (user_id, full_at)
            SELECT user_id, full_at FROM counted WHERE new ORDER BY user_id
            ON CONFLICT (user_id) DO NOTHING
            RETURNING user_id
        ),
        taken AS (
            UPDATE {table} b SET full_at = counted.full_at
            FROM counted WHERE b.user_id = counted.user_id AND NOT counted.new
        ),
        allowance AS (
            SELECT * FROM counted WHERE NOT new OR user_id IN (SELECT user_id FROM made)
        ),
        allowed AS (
            SELECT ranked.* FROM ranked JOIN allowance USING (user_id)
            WHERE ranked.k <= allowance.took
        )
    """  # noqa: S608 - the table name from the model; every value is a parameter


def send_rate_take(user_id: int) -> RateLimited | None:
    """One token from the user's bucket, made full if it is new, in one
    statement (any database). None if taken; else RateLimited, saying when
    one is back. For a post that the round's statement did not take for."""
    table = SendRate._meta.db_table
    postgres = connection.vendor == "postgresql"
    greatest = "GREATEST" if postgres else "MAX"
    # PostgreSQL evaluates SET and WHERE with the row locked (send_rate_sql);
    # SQLite has one writer at a time.
    now = _NOW_SQL if postgres else "%(clock)s"
    params = {**send_rate_params(), "user": user_id}
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (user_id, full_at) VALUES (%(user)s, %(clock)s + %(step)s)
            ON CONFLICT (user_id) DO UPDATE
            SET full_at = {greatest}({table}.full_at, {now}) + %(step)s
            WHERE {table}.full_at - {now} <= %(slack)s
            RETURNING full_at
            """,  # noqa: S608 - the table name from the model; every value is a parameter
            params,
        )
        if cursor.fetchone() is not None:
            return None
    full_at = SendRate.objects.filter(user_id=user_id).values_list("full_at", flat=True).first()
    return rate_limited((full_at or 0) - params["slack"] - params["clock"])
