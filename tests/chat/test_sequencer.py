"""A room's order at one process's fan-out (chat.fanout.Sequencer), without sockets."""

from chat.fanout import MAX_FILL, Sequencer


def seqs(room_events: list[dict]) -> list[int]:
    return [event["seq"] for event in room_events]


def test_messages_past_a_gap_wait_for_it_and_go_out_in_order():
    sequencer = Sequencer(next_seq=1)
    assert seqs(sequencer.push({"seq": 3})) == []
    assert seqs(sequencer.push({"seq": 2})) == []
    assert seqs(sequencer.push({"seq": 1})) == [1, 2, 3]
    assert sequencer.held == {}


def test_a_settled_gap_lets_out_only_what_was_held_when_its_hold_ran_out():
    sequencer = Sequencer(next_seq=1)
    sequencer.push({"seq": 2})
    gaps, through = sequencer.overdue()
    assert (gaps, through) == ([1], 2)
    sequencer.push({"seq": 4})  # a second gap opens while the database is read
    assert seqs(sequencer.settle([{"seq": 1}], through)) == [1, 2]
    assert list(sequencer.held) == [4]
    assert seqs(sequencer.push({"seq": 3})) == [3, 4]


def test_a_number_the_database_does_not_show_is_given_up_and_its_late_copy_still_goes_out():
    sequencer = Sequencer(next_seq=1)
    sequencer.push({"seq": 3})
    gaps, through = sequencer.overdue()
    assert gaps == [1, 2]
    assert seqs(sequencer.settle([{"seq": 1}], through)) == [1, 3]
    assert seqs(sequencer.push({"seq": 2})) == [2]  # hidden meanwhile, say: late, not lost
    assert seqs(sequencer.push({"seq": 1})) == []  # already sent from the database


def test_a_gap_longer_than_one_read_is_settled_a_read_at_a_time_in_order():
    sequencer = Sequencer(next_seq=1)
    last = MAX_FILL + 10
    sequencer.push({"seq": last + 1})
    gaps, through = sequencer.overdue()
    assert gaps == list(range(1, MAX_FILL + 1))
    assert through == MAX_FILL
    assert seqs(sequencer.settle([{"seq": s} for s in gaps], through)) == gaps
    gaps, through = sequencer.overdue()
    assert gaps == list(range(MAX_FILL + 1, last + 1))
    ready = sequencer.settle([{"seq": s} for s in gaps], through)
    assert seqs(ready) == list(range(MAX_FILL + 1, last + 2))
