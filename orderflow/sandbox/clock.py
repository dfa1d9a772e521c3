"""The sandbox's clock: real time plus an offset that tests can move forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class SimClock:
    """A deterministic clock: fulfilment engines, token expiry and webhook retries all read it."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None

    def now(self) -> datetime:
        """The current simulated time, always timezone-aware UTC."""
        if self._frozen_at is not None:
            return self._frozen_at + self._offset
        return datetime.now(UTC) + self._offset

    def timestamp(self) -> float:
        """The current simulated time as Unix seconds."""
        return self.now().timestamp()

    def advance(self, seconds: float) -> datetime:
        """Move simulated time forward, as if that much time had passed."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self._offset += timedelta(seconds=seconds)
        return self.now()

    def freeze(self, at: datetime | None = None) -> datetime:
        """Stop the clock (at `at`, or now); only `advance` moves it afterwards."""
        self._frozen_at = (at or self.now()).astimezone(UTC)
        self._offset = timedelta(0)
        return self.now()

    def unfreeze(self) -> None:
        """Let the clock follow real time again, keeping the current offset from it."""
        if self._frozen_at is not None:
            self._offset = self._frozen_at - datetime.now(UTC)
            self._frozen_at = None

    def reset(self) -> None:
        """Back to real time."""
        self._offset = timedelta(0)
        self._frozen_at = None

    def describe(self) -> dict[str, object]:
        """The clock's state, for the control API."""
        return {
            "now": self.now().isoformat(),
            "offset_seconds": self._offset.total_seconds(),
            "frozen": self._frozen_at is not None,
        }
