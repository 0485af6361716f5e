"""
Tests for :mod:`commandproto.ops.descriptors`: the descriptor budget.
"""

from __future__ import annotations

import resource

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from commandproto.ops.descriptors import (
    REFUSALS,
    SPARE,
    Budget,
    fit_file_limit,
    plan,
    wanted,
)

from ._helpers import LogCapture


class PlanTests(SynchronousTestCase):
    """
    :func:`plan` shares out a descriptor limit.
    """

    def test_ample_limit_gives_everything(self) -> None:
        self.assertEqual(
            plan(20000, 10000, handshakes=1000, proxy_headers=1000, metrics=16),
            Budget(20000, 10000, 1000, 1000, 16, REFUSALS, SPARE),
        )

    def test_no_limit_gives_everything(self) -> None:
        self.assertEqual(plan(None, 10000).connections, 10000)

    def test_tls_under_1024_serves_about_900(self) -> None:
        budget = plan(1024, 10000, handshakes=1000)
        self.assertGreaterEqual(budget.connections, 880)
        self.assertGreaterEqual(budget.handshakes, 30)
        # A burst over the limit is when the refusal reserve is needed.
        self.assertEqual(budget.refusals, REFUSALS)
        self.assertLessEqual(budget.total, 1024)

    def test_every_reserve_under_1024(self) -> None:
        budget = plan(1024, 10000, handshakes=1000, proxy_headers=1000, metrics=16)
        self.assertGreaterEqual(budget.connections, 800)
        self.assertEqual(budget.metrics, 16)
        self.assertLessEqual(budget.total, 1024)

    def test_kinds_not_asked_for_get_nothing(self) -> None:
        budget = plan(1024, 10000)
        self.assertEqual((budget.handshakes, budget.proxy_headers), (0, 0))

    @settings(max_examples=500)
    @given(
        limit=st.integers(SPARE + 16 + 8, 100_000),
        connections=st.integers(1, 50_000),
        handshakes=st.integers(0, 5000),
        proxy_headers=st.integers(0, 5000),
        metrics=st.sampled_from([0, 16]),
    )
    def test_never_over_the_limit_nor_the_asks(
        self,
        limit: int,
        connections: int,
        handshakes: int,
        proxy_headers: int,
        metrics: int,
    ) -> None:
        budget = plan(
            limit,
            connections,
            handshakes=handshakes,
            proxy_headers=proxy_headers,
            metrics=metrics,
        )
        self.assertLessEqual(budget.total, limit)
        self.assertGreaterEqual(budget.connections, 1)
        self.assertLessEqual(budget.connections, connections)
        self.assertLessEqual(budget.handshakes, handshakes)
        self.assertLessEqual(budget.proxy_headers, proxy_headers)
        self.assertEqual(budget.handshakes > 0, handshakes > 0)
        self.assertEqual(budget.proxy_headers > 0, proxy_headers > 0)
        if limit >= wanted(
            connections,
            handshakes=handshakes,
            proxy_headers=proxy_headers,
            metrics=metrics,
        ):
            self.assertEqual(
                (budget.connections, budget.handshakes, budget.proxy_headers),
                (connections, handshakes, proxy_headers),
            )


class FakeLimits:
    """
    Stand-ins for :func:`resource.getrlimit` and :func:`resource.setrlimit`.
    """

    def __init__(self, soft: int, hard: int, *, may_raise: bool = True) -> None:
        self.soft = soft
        self.hard = hard
        self.may_raise = may_raise

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if not self.may_raise:
            raise ValueError("not allowed")
        self.soft, self.hard = limits


class FitFileLimitTests(SynchronousTestCase):
    """
    :func:`fit_file_limit` raises the soft limit as far as it may, and
    warns in one line when it is still short.
    """

    def setUp(self) -> None:
        self.log = LogCapture(self)

    def fit(self, limits: FakeLimits, connections: int, **kinds: int) -> Budget:
        return fit_file_limit(
            connections,
            getrlimit=limits.getrlimit,
            setrlimit=limits.setrlimit,
            **kinds,
        )

    def test_raised_to_fit(self) -> None:
        limits = FakeLimits(1024, 65536)
        budget = self.fit(limits, 10000, handshakes=1000)
        self.assertEqual(limits.soft, wanted(10000, handshakes=1000))
        self.assertEqual((budget.connections, budget.handshakes), (10000, 1000))
        self.assertEqual(self.log.messages(), [])

    def test_raised_to_the_hard_limit_then_shared(self) -> None:
        limits = FakeLimits(256, 1024)
        budget = self.fit(limits, 10000, handshakes=1000)
        self.assertEqual(limits.soft, 1024)
        self.assertEqual(budget, plan(1024, 10000, handshakes=1000))

    def test_cannot_raise_shares_what_there_is(self) -> None:
        limits = FakeLimits(1024, 1024, may_raise=False)
        budget = self.fit(limits, 10000, handshakes=1000, proxy_headers=1000)
        self.assertEqual(limits.soft, 1024)
        self.assertEqual(
            self.log.messages(),
            [
                f"open-file limit 1024 allows only about {budget.connections} of "
                f"--max-connections 10000: serving at most {budget.connections}, "
                f"with {budget.handshakes} TLS handshakes and "
                f"{budget.proxy_headers} PROXY headers pending at once (raise "
                "the limit: ulimit -n, or LimitNOFILE= under systemd)"
            ],
        )

    def test_unlimited(self) -> None:
        limits = FakeLimits(resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        self.assertEqual(self.fit(limits, 10000).connections, 10000)
