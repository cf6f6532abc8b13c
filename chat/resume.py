"""Where a room's stream resumes after a break, for the client and the server alike.

Message ids grow with every room's messages, so a gap in one room's ids says
nothing, and live copies from different server processes may arrive slightly
out of id order. So a resume point only moves:
- through a page read from the database (complete up to its last id), or
- to a live message's id once it is `margin` seconds old: anything with a
  lower id was published before it and has arrived by then.
Resuming from here may repeat a few messages (clients drop them by id), never
skip one.
"""

import time
from collections import deque

LATE_MARGIN = 2.0  # seconds a live copy may trail a later one


class ResumePoint:
    def __init__(self, margin: float = LATE_MARGIN) -> None:
        self.margin = margin
        self.confirmed = 0
        self.recent: deque[tuple[float, int]] = deque()  # (arrival, id), oldest first

    def confirm_through(self, message_id: int) -> None:
        """A database page ended here: nothing at or below it is missing."""
        self.confirmed = max(self.confirmed, message_id)

    def live(self, message_id: int) -> None:
        self.recent.append((time.monotonic(), message_id))
        self._settle()

    def since(self) -> int:
        self._settle()
        return self.confirmed

    def _settle(self) -> None:
        old = time.monotonic() - self.margin
        while self.recent and self.recent[0][0] <= old:
            self.confirmed = max(self.confirmed, self.recent.popleft()[1])
