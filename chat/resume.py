"""Where a reader's copy of a room's messages is complete, for the client and the server alike.

Each room numbers its messages 1, 2, 3... (Message.seq) in commit order, and
within a room ids rise with the numbers. A reader that has every message up to
number `seq` (hidden ones aside) resumes after the id of that message,
`since`: the server sends all that follows, from the database. A live message
beyond a gap (its predecessor's copy is late, or was lost with the channel
layer) does not move that point; it waits in `ahead` until the gap fills, from
a late copy or a catch-up page.
"""

from dataclasses import dataclass, field


@dataclass(slots=True)
class Stream:
    seq: int = 0  # every message numbered up to this has been had (or is hidden)
    since: int | None = None  # the id to resume after: the last one had up to `seq`
    ahead: dict[int, int] = field(default_factory=dict)  # beyond a gap: seq -> id

    def page(self, messages: list[dict], through: int) -> None:
        """A page from the database (`joined`): complete up to number `through`.

        An empty one (the room had no message to show) still sets `since`,
        to 0: resuming without it would give only the latest page of what
        came meanwhile."""
        last = messages[-1]["id"] if messages else 0
        self.since = max(self.since or 0, last)
        self.seq = max(self.seq, through)
        self._settle()

    def live(self, message_id: int, seq: int) -> None:
        if seq == self.seq + 1:
            self.seq, self.since = seq, message_id
            self._settle()
        elif seq > self.seq:
            self.ahead[seq] = message_id

    @property
    def has_gap(self) -> bool:
        return bool(self.ahead)

    def _settle(self) -> None:
        if not self.ahead:  # the common case, for every socket of every message
            return
        for seq in sorted(self.ahead):
            if seq > self.seq + 1:
                break
            message_id = self.ahead.pop(seq)
            if seq == self.seq + 1:
                self.seq, self.since = seq, max(self.since or 0, message_id)
