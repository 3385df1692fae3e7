"""The curriculum's modulus sampler (its configuration, YAML and flags: utils/curriculum_config.py)."""
from __future__ import annotations

import numpy as np

from .seeds import modulus_draw_rng


class ModulusSampler:
    """Which modulus and which training sequence each slot of a global micro-batch gets.

    Micro-batch s at update u draws, for each of its batch_size x world_size slots, modulus i with
    probability w_i (the normalised weight at the last refresh, u rounded down to a multiple of
    `refresh_every`) and a uniform sequence of that modulus's training set, with replacement (as the
    original's weighted sampler). The draw is seeded by (main_seed, s): the same on resume and at any
    world size; rank r takes slots [r*B, (r+1)*B).
    """

    def __init__(self, sizes: list[int], weights_at, refresh_every: int, batch_size: int, main_seed: int,
                 rank: int = 0, world_size: int = 1):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.weights_at, self.refresh_every = weights_at, int(refresh_every)
        self.batch_size, self.main_seed = int(batch_size), int(main_seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self._cached: tuple[int, np.ndarray] | None = None

    def weights(self, update: int) -> np.ndarray:
        refresh = update - update % self.refresh_every
        if self._cached is None or self._cached[0] != refresh:
            self._cached = (refresh, np.asarray(self.weights_at(refresh), dtype=np.float64))
        return self._cached[1]

    def draw(self, micro_step: int, update: int) -> tuple[np.ndarray, np.ndarray]:
        """(modulus index, sequence index) arrays of this rank's share of micro-batch `micro_step`."""
        rng = modulus_draw_rng(self.main_seed, int(micro_step))
        n = self.batch_size * self.world_size
        which = rng.choice(len(self.sizes), size=n, p=self.weights(update))
        seq = rng.integers(0, self.sizes[which])
        share = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return which[share], seq[share]
