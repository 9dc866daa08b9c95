"""The prompt engine: (seed, pid) -> IdentitySpec, (seed, pid, view) -> ViewSpec with its prompts.

    engine = PromptEngine(load_taxonomy(path), PromptsConfig(), seed=0, token_counter=EstimatedTokenCounter())
    engine.identity(17)          # IdentitySpec: identity attributes, seed, number of views
    engine.views(17)             # every ViewSpec of pid 17
    engine.view(17, 3)           # the same as engine.views(17)[3], computed alone
    engine.iter_views(range(n))  # many pids, sampled in vectorised batches (the fast path)
    engine.taxonomy_hash         # sha256 of the canonical taxonomy, for dataset.json

Every answer is a pure function of (seed, pid[, view]) through counter-based Philox streams (streams.py):
no global RNG, no dependence on call order, process or worker count. Identities are distinct by
construction (dedup.py).

The engine takes only its own inputs: a taxonomy, its prompt config, a seed and a token counter for the
text encoder's budget. pipeline/prompting.py builds one from an experiment's `generate` section.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from dppp.foundation.errors import ConfigError
from dppp.prompts import streams
from dppp.prompts.config import PromptsConfig, ViewsConfig
from dppp.prompts.dedup import available_appearances, signatures
from dppp.prompts.sampler import pick, sample_dimensions
from dppp.prompts.spec import IdentitySpec, ViewSpec
from dppp.prompts.taxonomy import Taxonomy
from dppp.prompts.taxonomy_schema import CAMERA_COLUMNS
from dppp.prompts.templates import Composer
from dppp.prompts.tokens import EstimatedTokenCounter, TokenCounter

# Candidate draws tried for one pid before giving up on finding an unused appearance.
MAX_CANDIDATES = 1000
_BATCH_PIDS = 256


class EngineInputError(ConfigError):
    """A problem with one of the engine's own arguments, not with the taxonomy: `path` names the argument
    (seed, identities). Whoever read that value from a file can say where it stands there."""


def views_table(config: ViewsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(counts, cumulative probabilities) of the number of views per identity."""
    counts = np.arange(config.min, config.max + 1)
    if config.distribution == "fixed":
        weights = (counts == int(config.mean)).astype(np.float64)
    elif config.distribution == "uniform":
        weights = np.ones(len(counts))
    else:  # poisson, truncated to [min, max], in log space so large means do not overflow
        logs = counts * math.log(config.mean) - config.mean - np.array([math.lgamma(k + 1) for k in counts])
        weights = np.exp(logs - logs.max())
    return counts, np.cumsum(weights)


class PromptEngine:
    def __init__(
        self,
        taxonomy: Taxonomy,
        config: PromptsConfig,
        seed: int,
        *,
        identities: int | None = None,
        token_counter: TokenCounter | None = None,
    ):
        """`identities`: check up front that this many distinct identities exist and precompute them.
        `token_counter`: None counts with the vocabulary-free estimate (prompts/tokens.py)."""
        if seed < 0:
            raise EngineInputError(f"the seed must be a non-negative integer, got {seed}", path="seed")
        self.taxonomy = taxonomy
        self.config = config
        self.seed = seed
        self.token_counter = token_counter or EstimatedTokenCounter()
        templates = taxonomy.templates
        self.positive = Composer(
            taxonomy, templates.positive, templates.lists, self.token_counter, config.max_tokens
        )
        self.negative = Composer(
            taxonomy, templates.negative, templates.lists, self.token_counter, config.max_tokens
        )

        self._key = streams.stream_key(seed)
        ni = taxonomy.num_identity
        self._num_columns = len(taxonomy.columns)
        # Identity words: one per dimension, then the number of views and the identity seed.
        self._id_words = streams.words_per_item(ni + 2)
        # View words: the camera, the view seed, then one per view dimension.
        self._view_words = streams.words_per_item(2 + len(taxonomy.view_dims))
        self._view_counts, self._view_cumulative = views_table(config.views)
        self._camera_cumulative = np.cumsum(taxonomy.camera_weights)
        self._camids = [camera.camid for camera in taxonomy.cameras]
        names = [column.name for column in taxonomy.columns]
        self._identity_columns = [(names[c], taxonomy.columns[c].values, c) for c in range(ni)]
        self._view_columns = [(names[c], taxonomy.columns[c].values, c) for c in range(ni, self._num_columns)]

        # The identity table for pids 0 .. len - 1, grown on demand (see dedup.py for why in pid order).
        self._codes = np.zeros((0, ni), dtype=np.int32)
        self._num_views = np.zeros(0, dtype=np.int64)
        self._id_seeds = np.zeros(0, dtype=np.uint64)
        self._used: set[bytes] = set()
        self._attributes: dict[int, dict[str, str]] = {}
        if identities is not None:
            short = available_appearances(taxonomy, identities)
            if short is not None:
                raise EngineInputError(
                    f"{identities} identities asked, but the taxonomy {taxonomy.source} allows only {short} "
                    "distinct appearances",
                    path="identities",
                )
            self._extend(identities)

    @property
    def taxonomy_hash(self) -> str:
        return self.taxonomy.hash

    # -- identities --------------------------------------------------------------------------------
    def identity(self, pid: int) -> IdentitySpec:
        self._ensure(pid)
        return IdentitySpec(
            pid=pid,
            seed=int(self._id_seeds[pid]),
            attributes=dict(self._identity_attributes(pid)),
            num_views=int(self._num_views[pid]),
        )

    def num_views(self, pid: int) -> int:
        self._ensure(pid)
        return int(self._num_views[pid])

    def _ensure(self, pid: int) -> None:
        if pid < 0:
            raise ValueError(f"pid must be non-negative, got {pid}")
        if pid >= len(self._codes):
            self._extend(max(pid + 1, 2 * len(self._codes)))

    def _identity_attributes(self, pid: int) -> dict[str, str]:
        attrs = self._attributes.get(pid)
        if attrs is None:
            row = self._codes[pid].tolist()
            attrs = self._attributes[pid] = {
                name: values[row[c]] for name, values, c in self._identity_columns
            }
        return attrs

    def _candidates(self, lane: int, first_pid: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate draw `lane` for pids first_pid .. first_pid + count - 1: (codes, num_views, seeds)."""
        ni = self.taxonomy.num_identity
        raw = streams.raw_words(self._key, streams.IDENTITY, lane, first_pid, count, self._id_words)
        uniforms = streams.to_uniform(raw)
        codes = np.zeros((count, ni), dtype=np.int32)
        sample_dimensions(self.taxonomy.identity_dims, codes, uniforms)
        num_views = self._view_counts[pick(self._view_cumulative, uniforms[:, ni])]
        return codes, num_views, streams.to_seed(raw[:, ni + 1])

    def _extend(self, stop: int) -> None:
        start = len(self._codes)
        if stop <= start:
            return
        codes, num_views, seeds = self._candidates(0, start, stop - start)
        for i, signature in enumerate(signatures(self.taxonomy, codes)):
            if signature in self._used:
                signature = self._redraw(start + i, codes, num_views, seeds, i)
            self._used.add(signature)
        self.positive.check_appearance(codes, start)
        self.negative.check_appearance(codes, start)
        self._codes = np.concatenate([self._codes, codes])
        self._num_views = np.concatenate([self._num_views, num_views])
        self._id_seeds = np.concatenate([self._id_seeds, seeds])

    def _redraw(self, pid: int, codes: np.ndarray, num_views: np.ndarray, seeds: np.ndarray, i: int) -> bytes:
        for lane in range(1, MAX_CANDIDATES):
            c, n, s = self._candidates(lane, pid, 1)
            signature = signatures(self.taxonomy, c)[0]
            if signature not in self._used:
                codes[i], num_views[i], seeds[i] = c[0], n[0], s[0]
                return signature
        raise EngineInputError(
            f"no unused appearance for pid {pid} in {MAX_CANDIDATES} draws: the taxonomy "
            f"{self.taxonomy.source} has too few likely distinct appearances for this many identities",
            path="identities",
        )

    # -- views -------------------------------------------------------------------------------------
    def views(self, pid: int) -> list[ViewSpec]:
        return self._sample_views([(pid, 0, self.num_views(pid))])

    def view(self, pid: int, view: int) -> ViewSpec:
        count = self.num_views(pid)
        if not 0 <= view < count:
            raise IndexError(f"pid {pid} has {count} views, there is no view {view}")
        return self._sample_views([(pid, view, 1)])[0]

    def iter_views(self, pids: Iterable[int]) -> Iterator[ViewSpec]:
        """Every view of every pid, in order, sampled in vectorised batches of pids."""
        batch: list[tuple[int, int, int]] = []
        for pid in pids:
            batch.append((pid, 0, self.num_views(pid)))
            if len(batch) == _BATCH_PIDS:
                yield from self._sample_views(batch)
                batch = []
        if batch:
            yield from self._sample_views(batch)

    def _sample_views(self, requests: list[tuple[int, int, int]]) -> list[ViewSpec]:
        """Views first .. first + count - 1 of each (pid, first, count)."""
        taxonomy = self.taxonomy
        ni = taxonomy.num_identity
        raw = np.concatenate(
            [
                streams.raw_words(self._key, streams.VIEW, pid, first, count, self._view_words)
                for pid, first, count in requests
            ]
        )
        uniforms = streams.to_uniform(raw)
        pids = [pid for pid, _, _ in requests]
        counts = [count for _, _, count in requests]
        codes = np.empty((len(raw), self._num_columns), dtype=np.int32)
        codes[:, :ni] = np.repeat(self._codes[pids], counts, axis=0)
        cameras = pick(self._camera_cumulative, uniforms[:, 0])
        codes[:, ni : ni + len(CAMERA_COLUMNS)] = taxonomy.camera_codes[cameras]
        sample_dimensions(taxonomy.view_dims, codes, uniforms[:, 2:])
        view_seeds = streams.to_seed(raw[:, 1]).tolist()
        cameras = cameras.tolist()
        rows = codes.tolist()

        specs = []
        r = 0
        compose_positive, compose_negative = self.positive.compose, self.negative.compose
        for pid, first, count in requests:
            identity_attrs = self._identity_attributes(pid)
            identity_seed = int(self._id_seeds[pid])
            identity_row = rows[r]
            positive_base = self.positive.prepare(identity_row)
            negative_base = self.negative.prepare(identity_row)
            for view in range(first, first + count):
                row = rows[r]
                attributes = identity_attrs.copy()
                for name, values, c in self._view_columns:
                    attributes[name] = values[row[c]]
                prompt, dropped = compose_positive(row, positive_base)
                negative, _ = compose_negative(row, negative_base)
                specs.append(
                    ViewSpec(
                        pid=pid,
                        view=view,
                        camid=self._camids[cameras[r]],
                        seed=view_seeds[r],
                        identity_seed=identity_seed,
                        attributes=attributes,
                        prompt=prompt,
                        negative_prompt=negative,
                        dropped_slots=dropped,
                    )
                )
                r += 1
        return specs
