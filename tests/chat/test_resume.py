"""chat.resume.Stream: where a reader's copy of a room is complete."""

from chat.resume import Stream


def page_of(*pairs: tuple[int, int]) -> list[dict]:
    return [{"id": message_id, "seq": seq} for message_id, seq in pairs]


def test_live_messages_in_order_move_the_point():
    stream = Stream()
    stream.page([], through=0)
    stream.live(10, 1)
    stream.live(12, 2)
    assert (stream.seq, stream.since, stream.has_gap) == (2, 12, False)


def test_an_empty_first_page_resumes_from_the_start():
    stream = Stream()
    stream.page([], through=0)  # the room had no message to show
    # A join without `since` would give only the latest page of what came since.
    assert (stream.seq, stream.since) == (0, 0)


def test_a_message_beyond_a_gap_waits_until_the_gap_fills():
    stream = Stream(seq=5, since=50)
    stream.live(70, 7)
    stream.live(71, 8)
    assert (stream.seq, stream.since, stream.has_gap) == (5, 50, True)
    stream.live(60, 6)  # the late copy
    assert (stream.seq, stream.since, stream.has_gap) == (8, 71, False)


def test_a_page_fills_a_gap_and_what_waited_beyond_it_follows():
    stream = Stream(seq=5, since=50)
    stream.live(80, 8)
    stream.page(page_of((60, 6), (70, 7)), through=7)
    assert (stream.seq, stream.since, stream.has_gap) == (8, 80, False)


def test_a_page_covers_hidden_numbers_up_to_its_through():
    stream = Stream(seq=5, since=50)
    stream.live(90, 9)
    # 6 to 8 were hidden: the page has none of them, and says so.
    stream.page([], through=8)
    assert (stream.seq, stream.since, stream.has_gap) == (9, 90, False)


def test_copies_of_what_was_had_change_nothing():
    stream = Stream(seq=5, since=50)
    stream.live(40, 4)
    stream.live(50, 5)
    assert (stream.seq, stream.since, stream.has_gap) == (5, 50, False)
