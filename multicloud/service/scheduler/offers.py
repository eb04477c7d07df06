"""An offer round: ask every provider for offers, give each its time to answer.

A ROFR holder gets the contract's ``window`` to answer (one that does not counts as
declining, "no answer"); the others ``offers_timeout_s``. A provider whose previous call
has not returned yet is not asked again (at most one offers call per provider is ever in
flight, so a hanging cloud cannot pile up threads); it counts as not answering.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from multicloud.provider import Offer, ResourceRequest
from multicloud.service.effects import Effects
from multicloud.service.scheduler.timing import Clock

__all__ = ["OfferRounds", "RoundResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundResult:
    """What a finished round learned.

    Attributes:
        offers: Offers of every provider that answered in time.
        unresponsive: ROFR holders that did not answer within their window.
        answered: Providers whose offers are in ``offers``.
        accelerators: What the round asked for (empty: everything).
    """

    offers: list[Offer]
    unresponsive: frozenset[str]
    answered: frozenset[str]
    accelerators: frozenset[str]


@dataclass
class _Round:
    started: float
    accelerators: frozenset[str]
    futures: dict[str, cf.Future[list[Offer]]]
    skipped: frozenset[str]


class OfferRounds:
    """Offer rounds over the fleet's providers, one at a time.

    Args:
        effects: Adapter access.
        providers: Fleet provider names.
        holders: ROFR holders.
        window: The holders' time to answer, in seconds.
        timeout: The other providers' time to answer, in seconds.
        clock: The scheduler's clock.
        watch: Called with each future sent (wakes the cycle when it finishes).
    """

    def __init__(
        self,
        effects: Effects,
        providers: Sequence[str],
        *,
        holders: Collection[str],
        window: float,
        timeout: float,
        clock: Clock,
        watch: Callable[[cf.Future[list[Offer]]], None],
    ) -> None:
        self._effects = effects
        self._providers = list(providers)
        self._holders = frozenset(holders)
        self._window = window
        self._timeout = timeout
        self._clock = clock
        self._watch = watch
        self._in_flight: dict[str, cf.Future[list[Offer]]] = {}
        self._round: _Round | None = None

    @property
    def active(self) -> bool:
        """True while a round waits for answers."""
        return self._round is not None

    def outstanding(self) -> list[cf.Future[list[Offer]]]:
        """Offers calls not answered yet."""
        return [f for f in self._in_flight.values() if not f.done()]

    def deadline(self) -> float | None:
        """When the round in progress stops waiting for its slowest provider."""
        if self._round is None:
            return None
        longest = max((self._limit(name) for name in self._round.futures), default=0.0)
        return self._round.started + longest

    def _limit(self, name: str) -> float:
        return self._window if name in self._holders else self._timeout

    def start(self, accelerators: frozenset[str]) -> None:
        """Ask every provider for offers of ``accelerators`` (empty: all).

        Args:
            accelerators: Canonical accelerator names the jobs to plan accept.
        """
        request = ResourceRequest(accelerators=tuple(sorted(accelerators)))
        futures: dict[str, cf.Future[list[Offer]]] = {}
        skipped: set[str] = set()
        for name in self._providers:
            previous = self._in_flight.get(name)
            if previous is not None and not previous.done():
                skipped.add(name)
                continue
            fut = self._effects.offers(name, request)
            self._watch(fut)
            self._in_flight[name] = fut
            futures[name] = fut
        self._round = _Round(self._clock(), accelerators, futures, frozenset(skipped))

    def wait(self, seconds: float) -> None:
        """Block up to ``seconds`` (real time) for the round's answers."""
        if self._round is not None and seconds > 0:
            cf.wait(list(self._round.futures.values()), timeout=seconds)

    def poll(self) -> RoundResult | None:
        """Finish the round if every provider answered or ran out of time.

        Returns:
            The round's result, or None while some provider still has time to answer.
        """
        round_ = self._round
        if round_ is None:
            return None
        waited = self._clock() - round_.started
        if any(not f.done() and waited < self._limit(n) for n, f in round_.futures.items()):
            return None
        offers: list[Offer] = []
        unresponsive = {n for n in round_.skipped if n in self._holders}
        answered: set[str] = set()
        for name, fut in round_.futures.items():
            if not fut.done():
                log.warning("%s did not answer for offers within %.1f s", name, self._limit(name))
                if name in self._holders:
                    unresponsive.add(name)
                continue
            try:
                offers.extend(fut.result())
            except Exception as exc:
                log.warning("%s failed to list offers: %s", name, exc)
                if name in self._holders:
                    unresponsive.add(name)
                continue
            answered.add(name)
        self._round = None
        return RoundResult(
            offers, frozenset(unresponsive), frozenset(answered), round_.accelerators
        )
