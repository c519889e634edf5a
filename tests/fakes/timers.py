"""A scheduler to inject where code takes `schedule(delay, callback) -> handle` (TargetClaims'
hold): nothing fires until the test says so, so expiry is tested without wall-clock time."""

from __future__ import annotations


class FakeTimers:
    """An injectable scheduler: nothing fires until the test says so."""

    def __init__(self) -> None:
        self.pending: list[list] = []

    def __call__(self, delay, callback):
        entry = [delay, callback, False]
        self.pending.append(entry)

        class Handle:
            def cancel(self) -> None:
                entry[2] = True

        return Handle()

    def fire_all(self) -> int:
        due, self.pending = [e for e in self.pending if not e[2]], []
        for _, callback, _ in due:
            callback()
        return len(due)
