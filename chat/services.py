"""Writes: every change to rooms, memberships and messages goes through here.

The consumer, the REST API and the admin all call these functions, so a rule
(who may post, how long a message may be, who may add members) is written once.
"""

from contextlib import nullcontext
from functools import cache

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.backends.base.operations import BaseDatabaseOperations
from django.utils import timezone
from django.utils.text import slugify

from chat import events, metrics, protocol
from chat.asyncdb import compact, loop_connection
from chat.audit import Action, audit_record
from chat.exceptions import (
    Banned,
    BodyTooLong,
    ChatError,
    EmptyBody,
    Forbidden,
    InvalidRoomName,
    MemberBanned,
    Muted,
    OwnerCannotLeave,
    RateLimited,
    RoomArchived,
    RoomExists,
    RoomLocked,
    UserNotFound,
)
from chat.models import BODY_MAX_LENGTH, Membership, Message, Room, RoomSequence
from chat.ratelimit import rate_limited, send_rate_params, send_rate_sql, send_rate_take
from chat.roles import MANAGERS, OWNER, Role, is_staff, require_role

# --- rooms ------------------------------------------------------------------------------


def room_create(
    *,
    user: AbstractBaseUser,
    name: str,
    slug: str = "",
    description: str = "",
    is_private: bool = False,
) -> Room:
    """Create a room; its creator becomes its owner."""
    slug = slug or slugify(name)[:50]
    if not slug:
        raise InvalidRoomName()
    try:
        with transaction.atomic():
            room = Room.objects.create(
                slug=slug,
                name=name,
                description=description,
                is_private=is_private,
                created_by=user,
            )
            Membership.objects.create(user=user, room=room, role=Role.OWNER)
    except IntegrityError:
        raise RoomExists(f"A room {slug!r} already exists.") from None
    return room


@transaction.atomic
def room_update(*, user: AbstractBaseUser, room: Room, **fields: object) -> Room:
    """Change a room: its description by its moderators, anything else by its owner."""
    changed = {name: value for name, value in fields.items() if getattr(room, name) != value}
    if set(changed) <= {"description"}:
        require_role(user, room, MANAGERS, "Only the room's owner or moderators may change it.")
    else:
        require_role(user, room, OWNER, "Only the room's owner may change it.")
    if not changed:
        return room
    for name, value in changed.items():
        setattr(room, name, value)
    room.save(update_fields=list(changed))
    audit_record(actor=user, action=Action.ROOM_EDIT, room=room, fields=sorted(changed))
    return room


@transaction.atomic
def room_delete(*, user: AbstractBaseUser, room: Room) -> None:
    """Delete a room and its messages; the sockets in it leave it at once."""
    require_role(user, room, OWNER, "Only the room's owner may delete it.")
    room_id, slug = room.pk, room.slug
    room.delete()
    transaction.on_commit(lambda: events.room_deleted(room_id, room_slug=slug))


# --- memberships ----------------------------------------------------------------------------


def room_join(*, user: AbstractBaseUser, room: Room) -> Membership:
    """Make `user` a member of `room`; private rooms admit existing members only,
    and nobody banned gets back in."""
    if room.is_private:
        try:
            membership = Membership.objects.get(user=user, room=room)
        except Membership.DoesNotExist:
            raise Forbidden("This room is private; only its members may join.") from None
    else:
        membership, _ = Membership.objects.get_or_create(user=user, room=room)
    if membership.is_banned:
        raise Banned()
    return membership


@transaction.atomic
def member_add(
    *, actor: AbstractBaseUser, room: Room, username: str, role: str = Role.MEMBER
) -> tuple[Membership, bool]:
    """Add someone to a room (owner or moderator); only the owner hands out roles.

    Returns (membership, created); adding an existing member changes nothing.
    """
    require_role(actor, room, MANAGERS, "Only the room's owner or moderators may add members.")
    if role != Role.MEMBER:
        require_role(actor, room, OWNER, "Only the room's owner may appoint moderators.")
    if role == Role.OWNER:
        raise Forbidden("A room has one owner.")
    try:
        user = get_user_model().objects.get(username=username, is_active=True)
    except get_user_model().DoesNotExist:
        raise UserNotFound(f"No active user {username!r}.") from None
    membership, created = Membership.objects.get_or_create(
        user=user, room=room, defaults={"role": role}
    )
    if created:
        audit_record(actor=actor, action=Action.MEMBER_ADD, room=room, target_user=user, role=role)
    return membership, created


@transaction.atomic
def member_remove(*, actor: AbstractBaseUser, room: Room, membership: Membership) -> None:
    """Remove a member: themselves (leaving), or by the owner or a moderator.

    Moderators may remove members but not other moderators; nobody removes the owner.
    A ban and a running mute live on the membership, so they must outlast it:
    a banned user's leave changes nothing (they are out already), nobody
    removes a banned member (unbanning is how), and a muted one may not leave
    (leaving and joining again would end the mute).
    """
    if membership.role == Role.OWNER:
        raise OwnerCannotLeave()
    leaving = membership.user_id == actor.pk
    if membership.is_banned:
        if leaving:
            return
        raise MemberBanned()
    if leaving and (until := _mute_end(membership)):
        raise Muted(f"You are muted in this room until {until}: you may leave then.", until=until)
    if not leaving:
        needed = OWNER if membership.role == Role.MODERATOR else MANAGERS
        require_role(actor, room, needed, "You may not remove this member.")
        audit_record(
            actor=actor, action=Action.MEMBER_REMOVE, room=room, target_user=membership.user
        )
    user_id = membership.user_id
    reason = "left" if leaving else "removed"
    membership.delete()
    # A former member's open sockets must stop hearing the room at once.
    transaction.on_commit(
        lambda: events.user_removed_from_room(user_id, room_slug=room.slug, reason=reason)
    )


def room_leave(*, user: AbstractBaseUser, room: Room) -> None:
    try:
        membership = Membership.objects.get(user=user, room=room)
    except Membership.DoesNotExist:
        return  # not a member: leaving is already done
    member_remove(actor=user, room=room, membership=membership)


# --- messages -------------------------------------------------------------------------------


def message_validate_body(body: str) -> None:
    if not body.strip():
        raise EmptyBody()
    if len(body) > BODY_MAX_LENGTH:
        raise BodyTooLong(f"A message may hold at most {BODY_MAX_LENGTH} characters.")


def message_check_allowed(membership: Membership | None, user: AbstractBaseUser) -> None:
    """May this member post now? Raises the reason they may not."""
    if membership is None or membership.is_banned:
        raise Forbidden("Only members of this room may post in it.")
    room = membership.room
    if room.is_archived:
        raise RoomArchived()
    if room.is_locked and membership.role not in MANAGERS and not is_staff(user):
        raise RoomLocked()
    if until := _mute_end(membership):
        raise Muted(f"You are muted in this room until {until}.", until=until)


def _mute_end(membership: Membership) -> str | None:
    """When a running mute ends, as the protocol writes times; None if none runs."""
    if not membership.is_muted:
        return None
    return protocol.utc_text(membership.muted_until)


def message_post(
    *,
    user: AbstractBaseUser,
    room: Room,
    body: str,
    client_id: str | None = None,
    broadcast: bool = True,
) -> tuple[Message, bool]:
    """Store a message and, once committed, broadcast it to the room.

    Returns (message, created). A repeated (user, client_id) is not stored
    again: the first message comes back with created=False (and goes out to
    the room again), so a client may resend freely after a lost acknowledgement.

    `broadcast=False` leaves the broadcast to the caller, which must then send
    the returned message (created or not) with events.aroom_broadcast. The
    socket does so from its event loop: broadcasting from here would hold the
    process's one database thread for a channel-layer round trip per message.
    """
    message_validate_body(body)
    fields = {"user": user, "room": room, "body": body, "client_id": client_id}
    try:
        message = _message_insert(**fields) or _message_insert_locked(**fields)
    except IntegrityError:
        if client_id is None:
            raise
        existing = Message.objects.select_related("room", "user").get(
            user=user, client_id=client_id
        )
        # Broadcast again: a resend may mean the first copy never went out
        # (its process died between commit and broadcast). Receivers drop
        # what they already have, by id.
        if broadcast:
            events.room_broadcast(existing.room_id, protocol.message_frame(existing))
        return existing, False
    # After commit: a rolled-back message must never reach a screen, nor be counted.
    transaction.on_commit(metrics.MESSAGES_STORED.inc)
    if broadcast:
        frame = protocol.message_frame(message)
        transaction.on_commit(lambda: events.room_broadcast(room.id, frame))
    return message, True


# Tries of a statement that inserts posts (one, or a round of them) when another
# process took the same numbers first. A round then leaves its posts to be
# stored one by one; a post, to take the room's lock.
INSERT_TRIES = 3


def _message_insert(
    *, user: AbstractBaseUser, room: Room, body: str, client_id: str | None
) -> Message | None:
    """The common case in one statement (one round trip, no ORM compiling):
    insert the message numbered after the room's last, if message_check_allowed
    would let its sender post. None when it would not (or the number stayed
    contended): _message_insert_locked then decides, and says why.

    Two posts may read the same last number; the second insert then fails on
    (room, seq) once the first commits, and tries again with a fresh read.
    So a number is taken only after its predecessor committed: numbers follow
    commit order, and within a room ids rise with them. The room's row is
    share-locked meanwhile, so that what locks it (a locked post, an import)
    runs alone.
    """
    now = timezone.now()
    params = _insert_params(user=user, room=room, body=body, client_id=client_id, now=now)
    for _ in range(INSERT_TRIES):
        # A failed statement inside an outer transaction must not end it.
        savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
        try:
            with savepoint, connection.cursor() as cursor:
                cursor.execute(_insert_sql(), params)
                row = cursor.fetchone()
        except IntegrityError as exc:
            if _numbers_taken(exc):
                continue  # another post took this number first
            raise
        if row is None:
            return None
        return _inserted(row, user=user, room=room, body=body, client_id=client_id, now=now)
    return None


async def amessage_insert_many(posts: list[dict]) -> list[Message | RateLimited | None]:
    """The common case of message_post(**post) for each of `posts` (keyword
    arguments), at once, each behind its sender's send rate (chat.ratelimit),
    for the socket's posts of a turn (chat.posting): each post's new
    message; RateLimited when its sender has no token left; or None where
    message_post must be called to decide (the sender may not post now, a
    resent client_id, a number taken by another process meanwhile), its
    token taken, or a body to refuse (no token).

    On PostgreSQL, one statement for them all (_insert_many_sql): one plan,
    one round trip and one commit, tokens included, run on the event loop's
    own connection (chat.asyncdb), without a hop to the database thread.
    What it leaves undecided (a sender without a bucket yet, a statement
    that failed as a whole), and everything elsewhere (SQLite), is taken and
    stored post by post in the database thread.
    """
    valid = _valid_posts(posts)
    decided: dict[int, Message | RateLimited | None] = {}
    loop_db = loop_connection()
    if valid and loop_db.database.vendor == "postgresql":
        statement = _InsertMany(posts, valid, loop_db.database.ops)
        rows = []
        for _ in range(INSERT_TRIES):
            try:
                # Timed for operators: a disk slow to flush the WAL holds
                # every post behind it (docs/operations.md).
                with metrics.ROUND_SECONDS.time():
                    rows = await loop_db.fetchall(statement.sql, statement.params)
                break
            except IntegrityError as exc:
                if not _numbers_taken(exc):
                    break
        decided = statement.outcomes(rows)
    undecided = [i for i in valid if i not in decided]
    if undecided:
        decided |= await database_sync_to_async(_message_insert_each)(posts, undecided)
    return _counted(decided, len(posts))


def _valid_posts(posts: list[dict]) -> list[int]:
    """The indexes of the posts whose body may be stored: message_post says
    what is wrong with the others, and they take no token."""
    valid = []
    for index, post in enumerate(posts):
        try:
            message_validate_body(post["body"])
        except ChatError:
            continue
        valid.append(index)
    return valid


def _message_insert_each(posts: list[dict], indexes: list[int]) -> dict[int, Message | RateLimited]:
    """The posts at `indexes` one by one: each takes its token, then is stored.
    A resend takes none: message_post answers it with the stored message."""
    decided: dict[int, Message | RateLimited] = {}
    for index in indexes:
        post = posts[index]
        if _resent(post):
            continue
        limited = send_rate_take(post["user"].pk)
        if limited is not None:
            decided[index] = limited
        else:
            try:
                message = _message_insert(**post)
            except IntegrityError:  # a resent client_id
                continue
            if message is not None:
                decided[index] = message
    return decided


def _resent(post: dict) -> bool:
    return (
        post["client_id"] is not None
        and Message.objects.filter(user=post["user"], client_id=post["client_id"]).exists()
    )


def _counted(
    decided: dict[int, Message | RateLimited | None], count: int
) -> list[Message | RateLimited | None]:
    metrics.MESSAGES_STORED.inc(sum(isinstance(outcome, Message) for outcome in decided.values()))
    return [decided.get(index) for index in range(count)]


class _InsertMany:
    """_insert_many_sql for the posts at `valid` of `posts`, and what its rows say."""

    def __init__(self, posts: list[dict], valid: list[int], ops: BaseDatabaseOperations) -> None:
        self.posts = [posts[index] for index in valid]
        self.indexes = valid
        self.now = timezone.now()
        fields = [_insert_params(**post, now=self.now, ops=ops) for post in self.posts]
        self.sql = _insert_many_sql()
        # The parameters all posts share (now, the roles, the rate), and each post's in arrays.
        self.params = (
            fields[0]
            | send_rate_params()
            | {
                name: [post[name] for post in fields]
                for name in ("room", "user", "body", "client_id", "staff")
            }
        )

    def outcomes(self, rows: list[tuple]) -> dict[int, Message | RateLimited | None]:
        """By index in the round's posts: the messages stored, the posts
        refused for their rate, and None for those resent (message_post
        answers them). Nothing if the statement failed (no rows)."""
        # (ordinality, id, seq, wait): the position among the valid posts, from 1.
        outcomes = {}
        for n, id_, seq, wait in rows:
            post = self.posts[n - 1]
            if id_ is not None:
                outcome = _inserted((id_, seq), **post, now=self.now)
            elif wait is not None:
                outcome = rate_limited(wait)
            else:
                outcome = None
            outcomes[self.indexes[n - 1]] = outcome
        return outcomes


def _insert_params(
    *,
    user: AbstractBaseUser,
    room: Room,
    body: str,
    client_id: str | None,
    now,
    ops: BaseDatabaseOperations | None = None,
) -> dict:
    return {
        "room": room.pk,
        "user": user.pk,
        "body": body,
        "client_id": client_id,
        "now": (ops or connection.ops).adapt_datetimefield_value(now),
        "owner": Role.OWNER,
        "moderator": Role.MODERATOR,
        "staff": is_staff(user),
    }


def _inserted(
    row: tuple, *, user: AbstractBaseUser, room: Room, body: str, client_id: str | None, now
) -> Message:
    """The Message that _insert_sql or _insert_many_sql stored, from its (id, seq)."""
    id_, seq = row
    return Message.stored(
        room=room, user=user, id=id_, seq=seq, body=body, client_id=client_id, created_at=now
    )


def _message_insert_locked(
    *, user: AbstractBaseUser, room: Room, body: str, client_id: str | None
) -> Message:
    """The post with the room's row locked: the rare case, and the reference
    for who may post (message_check_allowed raises the reason not to)."""
    with transaction.atomic():
        # The room's current state (the caller's Room may be older than a
        # lock), locked until the commit, so that the message takes the next
        # number alone (chat.models.next_seq).
        membership = (
            Membership.objects.select_related("room")
            .select_for_update(of=("room",))
            .filter(user=user, room=room)
            .first()
        )
        message_check_allowed(membership, user)
        return Message.objects.create(room=room, user=user, body=body, client_id=client_id)


# Who may post, as message_check_allowed says (tests check both in every
# case): `r` is the room's row, `m` the sender's membership, {staff} whether
# the sender is staff. _message_insert_locked decides when this allows nothing.
_MAY_POST = """
    NOT r.is_archived AND NOT m.is_banned
    AND (m.muted_until IS NULL OR m.muted_until <= %(now)s)
    AND (NOT r.is_locked OR m.role IN (%(owner)s, %(moderator)s) OR {staff})
"""


@cache
def _insert_sql() -> str:
    """The statement of _message_insert."""
    # The room's row share-locked until the commit (see _message_insert).
    lock = " FOR KEY SHARE OF r" if connection.vendor == "postgresql" else ""
    tables = {model: model._meta.db_table for model in (Message, Membership, Room)}
    return f"""
        WITH poster AS (
            SELECT 1 FROM {tables[Room]} r
            JOIN {tables[Membership]} m ON m.room_id = r.id AND m.user_id = %(user)s
            WHERE r.id = %(room)s AND {_MAY_POST.format(staff="%(staff)s")}{lock}
        )
        INSERT INTO {tables[Message]} (room_id, user_id, body, client_id, created_at, seq)
        SELECT %(room)s, %(user)s, %(body)s, %(client_id)s, %(now)s,
               COALESCE((SELECT MAX(seq) FROM {tables[Message]} WHERE room_id = %(room)s), 0) + 1
        FROM poster
        RETURNING id, seq
    """  # noqa: S608 - table names from the models; every value is a parameter


@cache
def _insert_many_sql() -> str:
    """_insert_sql for many posts in one statement (PostgreSQL), their fields
    in arrays: one text for any number of posts, planned once per round
    instead of once per post (the planning was most of a round's time).

    The posts their senders may make (poster) take their send-rate tokens
    (chat.ratelimit.send_rate_sql) in the same statement, so in the same
    commit: a round that fails leaves its tokens untaken.

    The statement does not see its own rows: the posts allowed in a room take
    the numbers after its last, in their order (row_number), and are
    inserted in that order, so that ids rise with the numbers. The room's
    last number is its counter (RoomSequence), which the statement advances:
    another process's round in the same room waits for this one's commit,
    then numbers after it (a number read from the messages would be the same
    for both, and the second insert would fail on it). Returns
    (ordinality, id, seq, NULL) for each post stored and (ordinality, NULL,
    NULL, seconds to wait) for each refused for its rate, and (ordinality,
    NULL, NULL, NULL) for each resent (its client_id stored already), which
    takes no token and is left to message_post.
    """
    tables = {model: model._meta.db_table for model in (Message, Membership, Room, RoomSequence)}
    # The arrays of the columns' own types: the indexes' comparisons.
    room_type, user_type = (
        Message._meta.get_field(f).db_type(connection) for f in ("room", "user")
    )
    # Compacted: short enough for psycopg to keep its parse (chat.asyncdb).
    return compact(f"""
        WITH post AS (
            SELECT * FROM unnest(
                %(room)s::{room_type}[], %(user)s::{user_type}[], %(body)s::text[],
                %(client_id)s::text[], %(staff)s::boolean[]
            ) WITH ORDINALITY AS p(room_id, user_id, body, client_id, staff, n)
        ),
        resent AS (
            -- A client_id already stored: message_post answers with that message.
            -- (IS NOT NULL: the unique index on (user, client_id) is partial.)
            SELECT p.n FROM post p JOIN {tables[Message]} x
            ON x.user_id = p.user_id AND x.client_id = p.client_id AND x.client_id IS NOT NULL
        ),
        poster AS (
            SELECT p.* FROM post p
            JOIN {tables[Room]} r ON r.id = p.room_id
            -- A post's membership by the (user, room) index. As a plain join
            -- the planner read every member of a big room for each post
            -- (25 posts to a room of 1,000: 5.4 ms instead of 0.7).
            JOIN LATERAL (
                SELECT * FROM {tables[Membership]}
                WHERE user_id = p.user_id AND room_id = p.room_id
                LIMIT 1
            ) m ON true
            WHERE {_MAY_POST.format(staff="p.staff")} AND p.n NOT IN (SELECT n FROM resent)
            FOR KEY SHARE OF r
        ),
        {send_rate_sql()},
        room_posts AS (
            SELECT room_id, count(*) AS posts, COALESCE(
                (SELECT MAX(seq) FROM {tables[Message]} last WHERE last.room_id = a.room_id), 0
            ) AS last_seq
            FROM allowed a GROUP BY room_id
        ),
        room_counter AS (
            -- Each room's counter advanced by its posts, in room order (two
            -- rounds never wait for each other in a circle). A counter that
            -- another round took first is waited for and read as it committed
            -- it; a number taken elsewhere from the messages (next_seq) counts
            -- through the greater of the two.
            INSERT INTO {tables[RoomSequence]} AS c (room_id, last_seq)
            SELECT room_id, last_seq + posts FROM room_posts ORDER BY room_id
            ON CONFLICT (room_id) DO UPDATE SET last_seq = GREATEST(
                c.last_seq + (SELECT posts FROM room_posts WHERE room_id = c.room_id),
                EXCLUDED.last_seq
            )
            RETURNING room_id, last_seq
        ),
        numbered AS (
            SELECT a.*, row_number() OVER (PARTITION BY a.room_id ORDER BY a.n)
                + room_counter.last_seq - room_posts.posts AS seq
            FROM allowed a
            JOIN room_counter USING (room_id)
            JOIN room_posts USING (room_id)
        ),
        inserted AS (
            INSERT INTO {tables[Message]} (room_id, user_id, body, client_id, created_at, seq)
            SELECT room_id, user_id, body, client_id, %(now)s, seq FROM numbered ORDER BY n
            RETURNING id, room_id, seq
        )
        SELECT numbered.n, inserted.id, inserted.seq, NULL::float8
        FROM inserted JOIN numbered USING (room_id, seq)
        UNION ALL
        -- The posts refused for their rate, with the seconds until a token is back.
        SELECT ranked.n, NULL, NULL, allowance.full_at - %(slack)s - allowance.now
        FROM ranked JOIN allowance USING (user_id)
        WHERE ranked.k > allowance.took
        UNION ALL
        SELECT n, NULL, NULL, NULL FROM resent
        ORDER BY 1
    """)  # noqa: S608 - table names from the models; every value is a parameter


def _numbers_taken(exc: IntegrityError) -> bool:
    """Did a statement fail because another took the room's next numbers
    first (another process's round, committed after this one's read)? Run
    again, it reads them afresh, and its tokens, untaken, are taken then.
    Any other failure (a resent client_id) is the posts' own: they are then
    decided one by one."""
    return _constraint_of(exc) == "message_unique_room_seq"


def _constraint_of(exc: IntegrityError) -> str | None:
    """The violated constraint's name, where the driver tells it (psycopg)."""
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
