"""The adapter conformance suite: what every Provider must do, as reusable pytest tests.

Each adapter's test module subclasses ``ProviderConformance`` in a class whose name starts
with ``Test`` and provides the hooks; pytest then runs every ``test_…`` method against it::

    class TestSimConformance(ProviderConformance):
        def make_provider(self) -> Provider:
            return SimProvider(offers=[...])

The base class has no ``Test`` prefix so pytest does not collect it on its own. Real-cloud
adapters run it against their SDK test seams (stubbed clients), so no test needs credentials.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from multicloud.accelerators import CANONICAL_NAMES
from multicloud.errors import CapacityError, InvalidRequestError, ProviderError
from multicloud.provider import (
    Capability,
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    Provider,
    ResourceRequest,
    SupportsSweep,
    WorkloadState,
    WorkloadStatus,
    request_id,
)

__all__ = ["ProviderConformance"]

_LIVE_OR_DONE = frozenset(WorkloadState) - {WorkloadState.UNKNOWN}
_GONE = frozenset({WorkloadState.TERMINATED, WorkloadState.UNKNOWN})


class ProviderConformance:
    """Conformance tests every adapter runs; subclass it in a ``Test…`` class.

    Hooks for the subclass:
        ``make_provider`` (required): a fresh provider with at least one offer, ideally one
        sold on demand with room for three single-node launches.
        ``advance`` (optional): move the provider's notion of time forward.
        ``pick_offer`` (optional): the offer the tests launch on.
        ``make_spec`` (optional): the launch spec the tests use.
    """

    # -- hooks --------------------------------------------------------------------------

    def make_provider(self) -> Provider:
        """Return a fresh provider configured so that at least one offer exists.

        Returns:
            The provider under test.
        """
        raise NotImplementedError("subclasses of ProviderConformance provide make_provider()")

    def advance(self, seconds: float) -> None:
        """Move the provider's time forward; a no-op unless the subclass controls time.

        Args:
            seconds: How far.
        """

    def pick_offer(self, provider: Provider) -> Offer:
        """Choose the offer the tests launch on.

        Prefers an on-demand offer with room for three single-node launches, so that the
        batch tests can run.

        Args:
            provider: The provider under test.

        Returns:
            One of the provider's offers.
        """
        offers = provider.offers(ResourceRequest())
        assert offers, "make_provider() must return a provider with at least one offer"

        def roomy(o: Offer) -> bool:
            return o.capacity is None or o.capacity >= 3

        ranked = sorted(offers, key=lambda o: (o.price is None, not roomy(o)))
        return ranked[0]

    def make_spec(
        self,
        offer: Offer,
        *,
        job_id: str = "conformance-job",
        attempt: int = 1,
        nodes: int = 1,
        market: MarketKind | None = None,
        install_id: str = "conformance",
    ) -> LaunchSpec:
        """Build the launch spec the tests use.

        Args:
            offer: The offer it will be launched on (chooses the market by default).
            job_id: Job id.
            attempt: Attempt number.
            nodes: Nodes in the gang.
            market: Market; on-demand when the offer has a price, else spot.
            install_id: Scheduler install id tagged on what the launch creates.

        Returns:
            The spec.
        """
        if market is None:
            market = MarketKind.ON_DEMAND if offer.price is not None else MarketKind.SPOT
        return LaunchSpec(
            job_id=job_id,
            job_name="conformance",
            attempt=attempt,
            nodes=nodes,
            market=market,
            install_id=install_id,
            image="busybox:1.36",
            command="true",
            duration_hours=1.0,
        )

    # -- fixtures and helpers -------------------------------------------------------------

    @pytest.fixture
    def provider(self) -> Provider:
        """The provider under test, fresh for every test."""
        return self.make_provider()

    def _launch(
        self,
        provider: Provider,
        offer: Offer,
        job: str,
        *,
        nodes: int = 1,
        install_id: str = "conformance",
    ) -> Handle:
        # Subclasses may override make_spec without the install id: set it afterwards.
        spec = dataclasses.replace(
            self.make_spec(offer, job_id=job, nodes=nodes), install_id=install_id
        )
        key = request_id(job, spec.attempt, offer.region)
        return provider.launch(offer, spec, request_id=key)

    @staticmethod
    def _capacity_of(provider: Provider, offer: Offer) -> int | None:
        for o in provider.offers(ResourceRequest()):
            if o.key == offer.key:
                return o.capacity
        raise AssertionError(f"offer {offer.key} disappeared from offers()")

    # -- identity -------------------------------------------------------------------------

    def test_satisfies_protocol(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)

    def test_class_vars(self, provider: Provider) -> None:
        cls = type(provider)
        assert isinstance(cls.name, str) and cls.name
        assert isinstance(cls.capabilities, frozenset)
        assert all(isinstance(c, Capability) for c in cls.capabilities)

    def test_check_does_not_raise(self, provider: Provider) -> None:
        provider.check()

    # -- offers ---------------------------------------------------------------------------

    def test_offers_are_well_formed(self, provider: Provider) -> None:
        offers = provider.offers(ResourceRequest())
        assert offers
        for offer in offers:
            assert isinstance(offer, Offer)
            assert offer.provider
            assert offer.accelerator in CANONICAL_NAMES, offer.accelerator
            assert offer.count >= 1
            assert offer.price is not None or offer.spot_price is not None, offer.key
            for price in (offer.price, offer.spot_price):
                assert price is None or price >= 0, offer.key
            assert offer.capacity is None or offer.capacity >= 0, offer.key

    def test_offers_honour_accelerator_filter(self, provider: Provider) -> None:
        every = provider.offers(ResourceRequest())
        for accelerator in sorted({o.accelerator for o in every}):
            got = provider.offers(ResourceRequest(accelerators=(accelerator,)))
            assert got, accelerator
            assert {o.accelerator for o in got} == {accelerator}
            assert len(got) == sum(o.accelerator == accelerator for o in every)

    def test_offers_honour_count_filter(self, provider: Provider) -> None:
        most = max(o.count for o in provider.offers(ResourceRequest()))
        got = provider.offers(ResourceRequest(count=most))
        assert got and all(o.count >= most for o in got)
        assert provider.offers(ResourceRequest(count=most + 1)) == []

    def test_offers_have_no_side_effects(self, provider: Provider) -> None:
        request = ResourceRequest()
        assert provider.offers(request) == provider.offers(request)

    # -- launch ---------------------------------------------------------------------------

    def test_launch_returns_handle(self, provider: Provider) -> None:
        offer = self.pick_offer(provider)
        spec = self.make_spec(offer)
        key = request_id(spec.job_id, spec.attempt, offer.region)
        handle = provider.launch(offer, spec, request_id=key)
        assert isinstance(handle, Handle)
        assert handle.request_id == key
        assert handle.provider == offer.provider
        assert handle.region == offer.region
        assert handle.instance_type == offer.instance_type
        assert handle.nodes == spec.nodes
        assert handle.job_id == spec.job_id
        assert handle.market is spec.market

    def test_launch_is_idempotent(self, provider: Provider) -> None:
        offer = self.pick_offer(provider)
        before = self._capacity_of(provider, offer)
        first = self._launch(provider, offer, "idem")
        after_one = self._capacity_of(provider, offer)
        second = self._launch(provider, offer, "idem")
        assert second == first
        statuses = provider.status([first, second])
        assert list(statuses) == [first.id]
        if before is not None:
            assert after_one == before - first.nodes
            assert self._capacity_of(provider, offer) == after_one

    def test_launch_of_foreign_offer_is_invalid(self, provider: Provider) -> None:
        offer = dataclasses.replace(
            self.pick_offer(provider), instance_type="conformance-no-such-type"
        )
        with pytest.raises(InvalidRequestError):
            self._launch(provider, offer, "foreign")

    @pytest.mark.parametrize(
        ("case", "error"),
        [
            ("foreign-offer", InvalidRequestError),
            ("spot-without-spot-market", InvalidRequestError),
            ("over-capacity", CapacityError),
            ("reused-request-id", InvalidRequestError),
        ],
    )
    def test_errors_are_the_exact_provider_errors(
        self, provider: Provider, case: str, error: type[ProviderError]
    ) -> None:
        call = self._bad_launch(provider, case)
        if call is None:
            pytest.skip(f"{case}: no offer of this provider can provoke it")
        with pytest.raises(error) as caught:
            call()
        # Exactly that class: a CapacityError must not arrive as its ProviderError base,
        # and an InvalidRequestError must not be a CapacityError (no fail-over helps).
        assert type(caught.value) is error, type(caught.value)
        assert caught.value.provider == provider.offers(ResourceRequest())[0].provider

    def _bad_launch(self, provider: Provider, case: str) -> Callable[[], object] | None:
        offers = provider.offers(ResourceRequest())
        offer = self.pick_offer(provider)
        if case == "foreign-offer":
            foreign = dataclasses.replace(offer, region="conformance-nowhere-1", zone=None)
            return lambda: self._launch(provider, foreign, "bad-foreign")
        if case == "spot-without-spot-market":
            no_spot = next((o for o in offers if o.spot_price is None), None)
            if no_spot is None:
                return None
            spec = self.make_spec(no_spot, job_id="bad-spot", market=MarketKind.SPOT)
            key = request_id("bad-spot", 1, no_spot.region)
            return lambda: provider.launch(no_spot, spec, request_id=key)
        if case == "over-capacity":
            finite = next((o for o in offers if o.capacity is not None), None)
            if finite is None or finite.capacity is None:
                return None
            too_many = finite.capacity + 1
            if too_many > 1 and Capability.MULTI_NODE not in type(provider).capabilities:
                return None  # a gang it could never form is invalid, not out of capacity
            return lambda: self._launch(provider, finite, "bad-big", nodes=too_many)
        if case == "reused-request-id":
            key = request_id("bad-reuse", 1, offer.region)
            provider.launch(offer, self.make_spec(offer, job_id="bad-reuse"), request_id=key)
            other = self.make_spec(offer, job_id="bad-reuse-other")
            return lambda: provider.launch(offer, other, request_id=key)
        raise AssertionError(f"unknown case {case}")

    # -- status ---------------------------------------------------------------------------

    def test_status_is_one_batch_keyed_by_id(self, provider: Provider) -> None:
        offer = self.pick_offer(provider)
        if offer.capacity is not None and offer.capacity < 3:
            pytest.skip("the picked offer has no room for three launches")
        handles = [self._launch(provider, offer, f"batch-{i}") for i in range(3)]
        assert len({h.id for h in handles}) == 3
        statuses = provider.status(handles)
        assert set(statuses) == {h.id for h in handles}
        for status in statuses.values():
            assert isinstance(status, WorkloadStatus)
            assert status.state in _LIVE_OR_DONE

    def test_status_of_nothing_is_empty(self, provider: Provider) -> None:
        assert provider.status([]) == {}

    def test_status_after_time_passes_is_known(self, provider: Provider) -> None:
        handle = self._launch(provider, self.pick_offer(provider), "later")
        self.advance(60.0)
        assert provider.status([handle])[handle.id].state in _LIVE_OR_DONE

    # -- terminate ------------------------------------------------------------------------

    def test_terminate_then_status(self, provider: Provider) -> None:
        handle = self._launch(provider, self.pick_offer(provider), "term")
        provider.terminate(handle, request_id=f"{handle.request_id}-term")
        assert provider.status([handle])[handle.id].state in _GONE

    def test_terminate_twice_is_noop(self, provider: Provider) -> None:
        handle = self._launch(provider, self.pick_offer(provider), "term2")
        provider.terminate(handle, request_id=f"{handle.request_id}-term")
        provider.terminate(handle, request_id=f"{handle.request_id}-term")
        assert provider.status([handle])[handle.id].state in _GONE

    def test_terminate_unknown_handle_is_noop(self, provider: Provider) -> None:
        offer = self.pick_offer(provider)
        ghost = Handle(
            provider=offer.provider,
            id="conformance-ghost-0000",
            request_id="0" * 32,
            region=offer.region,
            zone=offer.zone,
            instance_type=offer.instance_type,
            nodes=1,
            market=MarketKind.ON_DEMAND,
            job_id="ghost",
        )
        provider.terminate(ghost, request_id="ghost-term")
        assert provider.status([ghost])[ghost.id].state in _GONE

    def test_terminate_frees_capacity(self, provider: Provider) -> None:
        offer = self.pick_offer(provider)
        before = self._capacity_of(provider, offer)
        if not before:
            pytest.skip("the picked offer has no known capacity limit, or none free")
        handle = self._launch(provider, offer, "free")
        provider.terminate(handle, request_id=f"{handle.request_id}-term")
        assert self._capacity_of(provider, offer) == before

    # -- orphan sweep ---------------------------------------------------------------------

    def test_owned_lists_exactly_this_installs_live_workloads(self, provider: Provider) -> None:
        if not isinstance(provider, SupportsSweep):
            pytest.skip("this provider keeps no ownership tags to sweep by")
        offer = self.pick_offer(provider)
        if offer.capacity is not None and offer.capacity < 3:
            pytest.skip("the picked offer has no room for three launches")
        mine = [self._launch(provider, offer, f"owned-{i}") for i in range(2)]
        theirs = self._launch(provider, offer, "owned-other", install_id="another-install")
        owned = provider.owned("conformance")
        by_id = {w.handle.id: w for w in owned}
        assert set(by_id) == {h.id for h in mine}
        for handle in mine:
            workload = by_id[handle.id]
            assert (workload.job_id, workload.attempt) == (handle.job_id, 1)
            assert workload.handle.provider == offer.provider
        assert theirs.id not in by_id
        provider.terminate(mine[0], request_id=f"{mine[0].request_id}-term")
        assert {w.handle.id for w in provider.owned("conformance")} == {mine[1].id}

    def test_an_owned_handle_can_be_terminated(self, provider: Provider) -> None:
        if not isinstance(provider, SupportsSweep):
            pytest.skip("this provider keeps no ownership tags to sweep by")
        handle = self._launch(provider, self.pick_offer(provider), "owned-term")
        [workload] = [w for w in provider.owned("conformance") if w.handle.id == handle.id]
        provider.terminate(workload.handle, request_id="sweep-" + workload.handle.id)
        assert provider.status([handle])[handle.id].state in _GONE
        assert handle.id not in {w.handle.id for w in provider.owned("conformance")}
