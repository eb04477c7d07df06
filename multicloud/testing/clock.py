"""A clock tests move by hand, so time-dependent behaviour is deterministic."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A callable clock returning seconds, standing in for ``time.monotonic``.

    Args:
        start: Initial reading in seconds.

    Example:
        >>> clock = FakeClock()
        >>> clock.advance(90)
        >>> clock()
        90.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        """Return the current reading in seconds."""
        return self._now

    @property
    def now(self) -> float:
        """The current reading in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Args:
            seconds: How far; must not be negative.

        Raises:
            ValueError: If ``seconds`` is negative (the clock it stands in for is monotonic).
        """
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got {seconds} s")
        self._now += float(seconds)

    def set(self, t: float) -> None:
        """Set the reading, e.g. to replay a scenario from a given instant.

        Args:
            t: New reading in seconds.
        """
        self._now = float(t)

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"
