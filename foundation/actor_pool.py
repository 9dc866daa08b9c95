"""The driver's view of the renderer actors of `dppp generate`: which are placed, loaded, lost.

Ray places an actor once some node has its resources free; until then the actor is only a request, and
a task sent to it waits with it. When a node dies it takes its actors (and the shards they held) along,
and on a full cluster their replacements cannot be placed. So the pool:

- hands work only to actors whose renderer is loaded (`ready`), never to a mere request;
- replaces a lost actor at once but does not wait for the replacement: the survivors carry on (a
  smaller pool), and the replacement joins whenever Ray places it;
- tells "waiting for a node" (bounded by `placement_timeout_s`) from "loading the renderer" (which may
  take minutes on a GPU and is not a capacity problem): a trivial call (`__ray_call__`, which every Ray
  actor has) answers with the actor's node once it is placed, its `load()` once the renderer is loaded;
- gives up a worker slot after `max_starts` failed starts in a row (a renderer that cannot load);
- reports when no actor has been placed for `placement_timeout_s`, or no slot is left: the caller
  stops the job with that message instead of waiting forever.

An actor class used here needs `load() -> str` (its Ray node id) and whatever the caller sends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# ray is imported inside the functions that need it: pipeline/generate.py, trainer/training/train.py and
# trainer/curation/job.py import this module, and their dry runs and plans must not pay for ray.

PLACING, LOADING, READY = "placing", "loading", "ready"


@dataclass
class ActorLoss:
    """An actor that died or became unreachable mid-run: serving shards, or while loading its renderer."""

    at_s: float  # seconds since the pool started
    worker: str
    node: str  # Ray node id it ran on
    error: str  # what became of it, in a few words
    # Whether Ray had declared its node dead by the end of the run. Ray notices a dead node only after
    # its health checks fail (about 15-30 s by default), while a task on it fails at once when the
    # connection drops: a loss is handled before its node's death is known.
    node_dead: bool = False
    shards: int = 0  # shards it held, handed back to the queue (counted by the caller)
    while_loading: bool = False  # lost before its renderer was loaded (it held no shard)


@dataclass
class _Member:
    actor: Any
    state: str = PLACING
    node: str = ""
    failed_starts: int = 0


class ActorPool:
    def __init__(
        self,
        spawn: Callable[[str], Any],
        size: int,
        *,
        placement_timeout_s: float,
        max_starts: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._spawn, self._clock = spawn, clock
        self.placement_timeout_s, self.max_starts = placement_timeout_s, max_starts
        self.started = clock()
        self._probes: dict[Any, tuple[str, str]] = {}  # probe ref -> (worker name, state it ends)
        self.members: dict[str, _Member] = {}
        self.losses: list[ActorLoss] = []
        self.sizes: list[tuple[float, int]] = [(0.0, 0)]  # (seconds since start, ready actors) at each change
        self.last_start_error = ""
        self._no_capacity_since: float | None = self.started
        for i in range(size):
            self._start(f"worker-{i}")

    # ---- what the caller asks -------------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        return {name: m.actor for name, m in self.members.items() if m.state == READY}

    def probes(self) -> list[Any]:
        return list(self._probes)

    def is_probe(self, ref: Any) -> bool:
        return ref in self._probes

    def wait_timeout(self) -> float | None:
        """How long the caller may wait for news: unbounded while some actor is placed, else what is left
        of `placement_timeout_s` since the last placed actor went away (or the pool started)."""
        if self._no_capacity_since is None:
            return None
        return max(0.0, self._no_capacity_since + self.placement_timeout_s - self._clock())

    def out_of_capacity(self) -> str | None:
        """Why the job cannot go on (no slot left, or nothing placed for too long); None while it can."""
        if not self.members:
            return f"every renderer actor failed to start ({self.max_starts} tries each): {self.last_start_error}"
        if self.wait_timeout() == 0.0:
            return (
                f"no renderer actor could be placed on the Ray cluster for {self.placement_timeout_s:g} s "
                "(placement_timeout_s): no node has the resources one needs free"
            )
        return None

    # ---- what the caller reports ----------------------------------------------------------------

    def settle(self, ref: Any) -> None:
        """A probe answered: the actor is placed, or loaded, or failed to start."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        name, state = self._probes.pop(ref)
        member = self.members[name]
        try:
            node = ray.get(ref)
        except (RayActorError, RayTaskError) as exc:
            self._failed_start(name, member, exc)
            return
        member.node = node
        if state == READY:
            member.failed_starts = 0
        if _RANK[state] > _RANK[member.state]:
            member.state = state
            self._changed()

    def lost(self, name: str, actor: Any, exc: BaseException) -> ActorLoss | None:
        """The ready actor `actor` died (or cannot be reached) serving a task: note it and request a
        replacement. Its other tasks fail the same way: they return the same loss. None if unknown."""
        member = self.members.get(name)
        if member is None or member.actor is not actor:
            return next((loss for loss in reversed(self.losses) if loss.worker == name), None)
        loss = ActorLoss(self._clock() - self.started, name, member.node, loss_cause(exc))
        self.losses.append(loss)
        self._kill(name)  # an unreachable actor may still live: free its resources for the replacement
        self._start(name, failed_starts=0)
        return loss

    def shutdown(self) -> None:
        for name in list(self.members):
            self._kill(name, record=False)
        if self.losses:
            dead = _dead_nodes()
            for loss in self.losses:
                loss.node_dead = loss.node in dead

    # ---- inside --------------------------------------------------------------------------------

    def _start(self, name: str, failed_starts: int = 0) -> None:
        actor = self._spawn(name)
        self.members[name] = _Member(actor, failed_starts=failed_starts)
        self._probes[actor.__ray_call__.remote(_node_of)] = (name, LOADING)
        self._probes[actor.load.remote()] = (name, READY)
        self._changed()

    def _failed_start(self, name: str, member: _Member, exc: BaseException) -> None:
        from ray.exceptions import RayActorError

        self.last_start_error = short_error(exc)
        if isinstance(exc, RayActorError) and member.node:  # placed, then its process or node went away
            at = self._clock() - self.started
            self.losses.append(ActorLoss(at, name, member.node, loss_cause(exc), while_loading=True))
        self._kill(name)
        if member.failed_starts + 1 < self.max_starts:
            self._start(name, failed_starts=member.failed_starts + 1)

    def _kill(self, name: str, *, record: bool = True) -> None:
        import ray

        member = self.members.pop(name)
        for ref in [ref for ref, (owner, _) in self._probes.items() if owner == name]:
            del self._probes[ref]
        ray.kill(member.actor, no_restart=True)
        if record:
            self._changed()

    def _changed(self) -> None:
        ready = sum(m.state == READY for m in self.members.values())
        if ready != self.sizes[-1][1]:
            self.sizes.append((self._clock() - self.started, ready))
        placed = any(m.state != PLACING for m in self.members.values())
        if placed:
            self._no_capacity_since = None
        elif self._no_capacity_since is None:
            self._no_capacity_since = self._clock()


_RANK = {PLACING: 0, LOADING: 1, READY: 2}


def actor_class(cls: type, resources: dict[str, float], env: dict[str, str], **ray_options: Any):
    """(`cls` as a Ray actor class placed with the pool's `resources`, the torch threads each actor may use).
    Its actors get `env`, what they need to reach storage (Storage.worker_env: never a secret); a GPU actor
    leaves torch's threads alone (None), a CPU one uses the CPUs it holds."""
    import ray

    remote = ray.remote(**ray_options, **resources)(cls)
    actors = remote.options(runtime_env={"env_vars": env}) if env else remote
    threads = None if "num_gpus" in resources else max(1, int(resources["num_cpus"]))
    return actors, threads


def _node_of(_actor: Any) -> str:
    """Run inside the actor by `__ray_call__`: the Ray node it was placed on."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _dead_nodes() -> set[str]:
    import ray

    return {node["NodeID"] for node in ray.nodes() if not node.get("Alive", True)}


def loss_cause(exc: BaseException) -> str:
    """A lost actor's fate in a few words. Unreachable is what a dead node looks like at first: the
    connection to the actor drops at once, Ray declares the node dead only after its health checks."""
    from ray.exceptions import ActorUnavailableError

    return "unreachable" if isinstance(exc, ActorUnavailableError) else short_error(exc)


def short_error(exc: BaseException) -> str:
    """The last line of the root error: what a user reads in a summary, without Ray's traceback."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"
