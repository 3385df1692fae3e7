"""Every random stream of a run: what seeds it, and what keeps it apart from the others.

main_seed seeds the model's initialisation (torch's global generator, `seed_everything`) and three
numpy streams, each drawn from `default_rng([main_seed, ..., tag])`. numpy turns a list of integers
into unrelated streams whenever the lists differ, so each stream's own tag (or list length) keeps it
from ever repeating another's draws: the training order never correlates with the curriculum's modulus
draws or with the sequences the correctness pass samples. data_seed seeds the (a, c) split of each
modulus (`split_rng`) and, through a hash, every start state (utils/data.py `start_states`).

The tags are arbitrary but fixed: a new value would change the data order or the samples of every run.
"""
from __future__ import annotations

import random

import numpy as np
import torch

EPOCH_ORDER_TAG = 0x5EED  # the order of the training sequences in each epoch: [main_seed, epoch, tag]
MODULUS_DRAW_TAG = 0xC0FFEE  # the curriculum's modulus and sequence of each slot: [main_seed, micro-batch, tag]
CORRECTNESS_SAMPLE_TAG = 82  # the 4096 training sequences of the final correctness pass: [main_seed, tag]
CURRICULUM_SEED_STRIDE = 1000  # modulus i of a curriculum splits its (a, c) with data_seed + 1000 i (the original's)


def seed_everything(seed: int) -> None:
    """Model init draws from torch's RNG; numpy's and Python's global generators are seeded for any user code."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_rng(data_seed: int, modulus_index: int = 0) -> np.random.Generator:
    """The generator of the (a, c) split of the run's modulus `modulus_index` (0 for a single modulus)."""
    return np.random.default_rng(data_seed + CURRICULUM_SEED_STRIDE * modulus_index)


def last_split_seed(data_seed: int, n_moduli: int) -> int:
    """The seed of the last modulus's split (it must fit int64, as data_seed does)."""
    return data_seed + CURRICULUM_SEED_STRIDE * (n_moduli - 1)


def epoch_rng(main_seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([main_seed, epoch, EPOCH_ORDER_TAG])


def modulus_draw_rng(main_seed: int, micro_step: int) -> np.random.Generator:
    return np.random.default_rng([main_seed, micro_step, MODULUS_DRAW_TAG])


def correctness_sample_rng(main_seed: int) -> np.random.Generator:
    return np.random.default_rng([main_seed, CORRECTNESS_SAMPLE_TAG])
