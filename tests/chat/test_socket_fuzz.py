"""Property-based fuzzing of the chat socket (Hypothesis).

Whatever a client sends, text or JSON, sensible or not: the consumer never
raises, never closes the socket, answers only with well-formed frames, and the
stored data stays consistent.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.models import BODY_MAX_LENGTH, Membership, Message
from tests.factories import make_room
from tests.rounds import on_a_loop_of_its_own
from tests.ws import connect

pytestmark = pytest.mark.django_db(transaction=True)

SERVER_FRAMES = {
    "joined",
    "left",
    "message",
    "presence",
    "typing",
    "error",
    "message_deleted",
    "room_state",
    "removed",
}
# After each fuzzed frame: an unknown type whose error names it (ref), so
# that every answer to the fuzzed frame has arrived before it.
SENTINEL_TYPE = "fuzz-sentinel"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
rooms = st.sampled_from(["lobby", "closed", "nowhere", ""]) | st.text(max_size=60)
plausible = st.fixed_dictionaries(
    {"type": st.sampled_from(["join", "leave", "message", "typing", "delete", "shout"])},
    optional={
        "room": rooms | json_values,
        "since": st.integers(-5, 10**12) | json_values,
        "body": st.text(max_size=50) | st.just(" ") | st.just("x" * 4001) | json_values,
        "client_id": st.text(min_size=1, max_size=8) | st.text(min_size=101) | json_values,
        "typing": st.booleans() | json_values,
        "id": st.integers(-1, 10**6) | json_values,
    },
)
frames = (
    plausible.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(min_size=1, max_size=200)
    | st.binary(min_size=1, max_size=64)
)


def assert_well_formed(frame: dict) -> None:
    assert isinstance(frame, dict)
    assert frame["type"] in SERVER_FRAMES, frame
    if frame["type"] == "error":
        assert isinstance(frame["code"], str)
        assert frame["code"]
        assert isinstance(frame["detail"], str)
        assert frame["ref"] is None or isinstance(frame["ref"], str)


async def exchange(user, sent: list) -> None:
    async with connect(user) as client:
        for number, frame in enumerate(sent):
            if isinstance(frame, bytes):
                await client.communicator.send_to(bytes_data=frame)
            else:
                await client.send_text(frame)
            sentinel = f"sentinel-{number}"
            await client.send({"type": SENTINEL_TYPE, "room": sentinel})
            while True:
                answer = await client.receive()  # fails if the socket closed
                assert_well_formed(answer)
                if answer["type"] == "error" and answer["ref"] == sentinel:
                    break


@pytest.fixture
def rooms_to_fuzz(user, room):
    make_room("closed", is_private=True)
    return room


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=st.lists(frames, min_size=1, max_size=8))
def test_any_frames_get_well_formed_answers_and_keep_the_socket(user, rooms_to_fuzz, sent):
    # Each example's loop ends with it: so does its database session.
    on_a_loop_of_its_own(exchange)(user, sent)
    for message in Message.objects.all():
        assert 0 < len(message.body) <= BODY_MAX_LENGTH
        assert message.body.strip()
        assert message.room.slug == "lobby"
    assert not Membership.objects.filter(room__slug="closed").exists()
    ids = [m.client_id for m in Message.objects.exclude(client_id=None)]
    assert len(ids) == len(set(ids))
