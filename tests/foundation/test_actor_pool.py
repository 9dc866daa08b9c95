"""dppp.pipeline.actor_pool without Ray: the bounded wait for placement, on a fake clock.

The pool's answers to Ray (placed, loaded, lost) are exercised on real Ray clusters in
tests/pipeline/test_generate.py and tests/pipeline/test_node_loss.py; here only the deadline arithmetic, which decides
when `dppp generate` stops instead of waiting forever for an actor no node can hold."""

from __future__ import annotations

from dppp.foundation.actor_pool import ActorPool


class _Method:
    def remote(self, *args):
        return object()  # stands in for an ObjectRef that never resolves: the actor is never placed


class _NeverPlacedActor:
    __ray_call__ = _Method()
    load = _Method()


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_actor_placed_is_waited_for_placement_timeout_then_reported():
    clock = _Clock()
    pool = ActorPool(lambda name: _NeverPlacedActor(), 2, placement_timeout_s=30, max_starts=3, clock=clock)
    assert len(pool.probes()) == 4 and pool.ready() == {}  # a placement and a load probe per actor
    assert pool.wait_timeout() == 30 and pool.out_of_capacity() is None
    clock.now += 29.5
    assert pool.wait_timeout() == 0.5 and pool.out_of_capacity() is None
    clock.now += 0.5
    assert pool.wait_timeout() == 0.0
    reason = pool.out_of_capacity()
    assert reason and "could be placed" in reason and "30 s" in reason and "placement_timeout_s" in reason
    assert pool.sizes == [(0.0, 0)]  # never a loaded actor
