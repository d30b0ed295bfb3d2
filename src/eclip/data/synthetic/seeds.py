"""Which scenes are which: the seed of each scene, and the seeds kept for training, validation and test.

`render_scene(seed)` is a pure function of (seed, config). Scene `i` of a dataset or stream with
seed `S` uses `scene_seed(S, i)`, a numpy `SeedSequence` child, so datasets with different seeds do
not share scenes and any scene can be rendered on its own (batch `i` of a resumed training run is
the batch it would have been).
"""
from __future__ import annotations

import numpy as np

from eclip.errors import DatasetError

#: Seeds of the streams the bundled models were trained on; every other seed is held out.
TRAIN_SEEDS = (1000, 1001)
#: Held-out scenes on which ECLIP's settings are chosen (the ablation's validation set).
VALIDATION_SEED = 4242
#: Held-out scenes on which results are reported (`eclip shift`'s default, the README tables).
TEST_SEED = 777


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene `index` of a dataset or stream seeded with `seed` (a SeedSequence child)."""
    if seed < 0 or index < 0:
        raise DatasetError(f"seed={seed}, index={index}: seeds and scene indices must be >= 0")
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])
