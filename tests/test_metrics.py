"""Every metric on hand-made maps whose scores are known exactly, and every state adds up across shards."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eclip.metrics import (
    Deletion,
    Insertion,
    PointingGame,
    ScoreContrast,
    ThresholdIoU,
    ZeroShotAccuracy,
    perturbation_curves,
    threshold_grid,
)
from eclip.metrics.faithfulness import baseline_images, removal_rank


def square_mask(size: int = 10) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[2:5, 2:5] = True
    return mask


def brute_force_iou(maps: np.ndarray, masks: np.ndarray, ignore: np.ndarray | None, grid: np.ndarray) -> np.ndarray:
    """(T, 2) mean fg and bg IoU per threshold, pixel by pixel: the definition, written the slow way."""
    out = np.zeros((len(grid), 2))
    for s, m in zip(maps, masks):
        valid = np.ones_like(m) if ignore is None else ~ignore
        for j, t in enumerate(grid):
            pred = (s >= t) & valid
            fg, bg = m & valid, ~m & valid
            out[j, 0] += (pred & fg).sum() / (pred | fg).sum()
            out[j, 1] += (~pred & valid & bg).sum() / ((~pred & valid) | bg).sum()
    return out / len(maps)


# ---------------------------------------------------------------------------------------------- IoU


def test_iou_of_a_perfect_and_an_inverted_map():
    mask = square_mask()
    iou = ThresholdIoU()
    iou.update(mask.float()[None], mask[None])
    assert iou.compute() == {"n_pairs": 1, "degenerate": 0, "threshold": 0.05, "fg_iou": 1.0, "miou": 1.0}
    inverted = ThresholdIoU()
    inverted.update((~mask).float()[None], mask[None])
    out = inverted.compute()  # the best it can do is threshold 0: everything foreground
    assert out["threshold"] == 0.0 and out["fg_iou"] == pytest.approx(9 / 100) and out["miou"] == pytest.approx(9 / 200)


def test_iou_of_a_graded_map_by_hand():
    # one row of 4 pixels: mask on the first two; thresholds in (0.1, 0.4] predict pixels 0, 1, 2
    maps = torch.tensor([[[0.9, 0.4, 0.6, 0.1]]])
    masks = torch.tensor([[[True, True, False, False]]])
    metric = ThresholdIoU()
    metric.update(maps, masks)
    out = metric.compute()
    assert out["threshold"] == 0.15 and out["fg_iou"] == pytest.approx(2 / 3) and out["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    curve = metric.curve()["fg_iou"]
    assert curve[0] == pytest.approx(0.5) and curve[-1] == 0.0 and curve[10] == pytest.approx(1 / 3)  # t=0.5


def test_iou_matches_the_definition_on_random_maps_with_ignored_pixels():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 12, 9)).astype(np.float32)
    maps[0, :3] = 0.25  # values exactly on grid points
    masks = rng.random((5, 12, 9)) < 0.3
    ignore = rng.random((12, 9)) < 0.1
    grid = threshold_grid(0.05)
    metric = ThresholdIoU(grid)
    metric.update(maps, masks, ignore)
    expected = brute_force_iou(maps, masks, ignore, grid.numpy())
    count = float(metric.count)
    assert np.allclose(metric.fg_sum.numpy() / count, expected[:, 0]) and np.allclose(metric.bg_sum.numpy() / count, expected[:, 1])


def test_ignored_pixels_do_not_count_and_degenerate_pairs_are_dropped():
    mask = square_mask()
    ignore = torch.zeros(10, 10, dtype=torch.bool)
    ignore[8:, 8:] = True
    noisy = mask.float().clone()
    noisy[8:, 8:] = 1.0  # a false positive, but on ignored pixels only
    metric = ThresholdIoU()
    metric.update(torch.stack([noisy, noisy]), torch.stack([mask, torch.zeros_like(mask)]), ignore)
    out = metric.compute()
    assert out["fg_iou"] == 1.0 and out["n_pairs"] == 1 and out["degenerate"] == 1


def test_threshold_grid():
    assert threshold_grid(0.05).tolist()[:3] == pytest.approx([0.0, 0.05, 0.1]) and len(threshold_grid(0.01)) == 101
    with pytest.raises(ValueError):
        threshold_grid(0.3)


# -------------------------------------------------------------------------------------- contrast


def test_score_contrast_by_hand():
    mask = square_mask()
    perfect, inverted = mask.float(), (~mask).float()
    graded = torch.where(mask, 0.6, 0.2)
    metric = ScoreContrast()
    metric.update(torch.stack([perfect, inverted]), torch.stack([mask, mask]))
    assert metric.compute() == {"msc": 0.0, "score_contrast": 0.0, "inverted_rate": 0.5, "n_pairs": 2}
    only_inverted = ScoreContrast()
    only_inverted.update(inverted, mask)
    assert only_inverted.compute()["msc"] == -100.0 and only_inverted.compute()["inverted_rate"] == 1.0
    one = ScoreContrast()
    one.update(graded, mask)
    assert one.compute()["msc"] == pytest.approx(40.0) and one.compute()["inverted_rate"] == 0.0
    assert ScoreContrast.higher_is_better and not Deletion.higher_is_better and Insertion.higher_is_better


def test_score_contrast_excludes_ignored_pixels():
    mask = square_mask()
    ignore = torch.zeros_like(mask)
    ignore[9] = True
    graded = torch.where(mask, 0.6, 0.2)
    graded[9] = 1.0  # would pull the outside mean up if counted
    metric = ScoreContrast()
    metric.update(graded, mask, ignore)
    assert metric.compute()["msc"] == pytest.approx(40.0)


def test_per_pair_contrasts_keep_their_places_and_sum_to_the_msc():
    mask = square_mask()
    ignore = torch.zeros_like(mask)
    ignore[9] = True
    graded = torch.where(mask, 0.6, 0.2)
    graded[9] = 1.0  # ignored: the contrast stays 0.4
    empty = torch.zeros_like(mask)  # no object: undefined
    maps = torch.stack([graded, 1 - graded, graded])
    masks = torch.stack([mask, mask, empty])
    per_pair = ScoreContrast.per_pair(maps, masks, ignore)
    assert per_pair[:2].tolist() == pytest.approx([0.4, -0.4]) and torch.isnan(per_pair[2])
    metric = ScoreContrast()
    metric.update(maps, masks, ignore)
    assert metric.compute()["msc"] == pytest.approx(100 * float(per_pair[:2].mean()), abs=1e-12)
    assert torch.equal(per_pair[:2], ScoreContrast.contrasts(maps, masks, ignore))


# -------------------------------------------------------------------------------------- zero-shot


def test_zero_shot_accuracy_counts_a_hit_among_the_present_classes():
    metric = ZeroShotAccuracy()
    metric.update([0, 2, 1], [{0}, {1, 2}, {0}])  # hit (single), hit (two present), miss (single)
    assert metric.compute() == {"top1": pytest.approx(2 / 3), "top1_single": 0.5, "n": 3, "n_single": 2}
    other = ZeroShotAccuracy()
    other.update([3], [{3}])
    assert metric.merge(other).compute()["top1"] == 0.75 and ZeroShotAccuracy().compute()["top1"] == 0.0
    assert ZeroShotAccuracy.higher_is_better


# -------------------------------------------------------------------------------------- pointing


def test_pointing_game_on_known_peaks():
    mask = square_mask()
    inside, outside, tie = torch.zeros(10, 10), torch.zeros(10, 10), torch.zeros(10, 10)
    inside[3, 3] = 1.0
    outside[7, 7] = 1.0
    tie[0, 0] = tie[3, 3] = 1.0  # the first in raster order wins: (0, 0), a miss
    metric = PointingGame()
    metric.update(torch.stack([inside, outside, tie]), torch.stack([mask] * 3))
    assert metric.compute() == {"pointing_game": pytest.approx(1 / 3), "n_pairs": 3}
    ignore = torch.zeros_like(mask)
    ignore[7, 7] = True
    masked_peak = outside.clone()
    masked_peak[3, 3] = 0.5  # the peak is ignored, so the next one, inside, counts
    assert _pointing(masked_peak, mask, ignore) == 1.0


def _pointing(score, mask, ignore=None, tolerance=0):
    metric = PointingGame(tolerance)
    metric.update(score, mask, ignore)
    return metric.compute()["pointing_game"]


def test_pointing_game_tolerance_is_a_disc():
    mask = square_mask()  # rows and columns 2..4
    near, diagonal = torch.zeros(10, 10), torch.zeros(10, 10)
    near[3, 6] = 1.0  # 2 px right of the mask
    diagonal[6, 6] = 1.0  # sqrt(8) = 2.83 px from the corner (4, 4)
    assert _pointing(near, mask, tolerance=1) == 0.0 and _pointing(near, mask, tolerance=2) == 1.0
    assert _pointing(diagonal, mask, tolerance=2) == 0.0 and _pointing(diagonal, mask, tolerance=3) == 1.0


# ----------------------------------------------------------------------------- deletion / insertion


def _mask_scorer(mask: torch.Tensor):
    """The share of the object's pixels still there: an ideal model that only looks at the object."""
    def score(images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return images[:, 0][:, mask].mean(dim=1)
    return score


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_deletion_and_insertion_with_a_known_scorer(chunk):
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0] = True  # 4 of 16 pixels: removed in the first of 4 steps by the perfect map
    image = torch.ones(1, 3, 4, 4)
    maps = torch.stack([mask.float(), (~mask).float()])[None]  # (1, 2, 4, 4): perfect, inverted
    pairs = torch.tensor([[0, 0], [0, 1]])
    deletion, insertion = perturbation_curves(_mask_scorer(mask), image, maps, pairs, steps=4, baseline=torch.zeros_like(image),
                                              chunk=chunk)
    assert deletion.tolist() == [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0]]
    assert insertion.tolist() == [[0, 1, 1, 1, 1], [0, 0, 0, 0, 1]]
    d, i = Deletion(4), Insertion(4)
    d.update(deletion)
    i.update(insertion)
    assert d.compute()["deletion_auc"] == pytest.approx((0.125 + 0.875) / 2) and d.mean_curve() == [1, 0.5, 0.5, 0.5, 0]
    assert Deletion.auc(deletion).tolist() == [0.125, 0.875] and Insertion.auc(insertion).tolist() == [0.875, 0.125]


def test_deletion_of_a_linear_score_is_one_half():
    image = torch.ones(2, 3, 6, 5)
    maps = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    pairs = torch.tensor([[0, 2], [1, 0], [1, 1]])
    deletion, insertion = perturbation_curves(lambda x, k: x.mean(dim=(1, 2, 3)), image, maps, pairs, steps=5,
                                              baseline=torch.zeros_like(image))
    assert torch.allclose(Deletion.auc(deletion), torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.allclose(Insertion.auc(insertion), torch.full((3,), 0.5, dtype=torch.float64))


def test_removal_rank_and_baselines():
    maps = torch.tensor([[[0.2, 0.9], [0.9, 0.1]]])
    assert removal_rank(maps).tolist() == [[2, 0, 1, 3]]
    images = torch.randn(2, 3, 32, 24)
    mean = baseline_images(images, "mean")
    assert torch.allclose(mean[:, :, 5, 7], images.mean(dim=(2, 3)))
    blur = baseline_images(images, "blur")
    assert blur.shape == images.shape and blur.std() < images.std()


# ------------------------------------------------------------------------------------ reduction


def _random_pairs(seed: int, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 9, 11, generator=g), torch.rand(n, 9, 11, generator=g) < 0.4


@pytest.mark.parametrize("cls", [ThresholdIoU, ScoreContrast, PointingGame])
def test_merge_and_json_state_equal_one_pass(cls):
    whole, first, second = cls(), cls(), cls()
    for seed in range(4):
        maps, masks = _random_pairs(seed)
        whole.update(maps, masks)
        (first if seed < 2 else second).update(maps, masks)
    restored = cls()
    restored.load_state(json.loads(json.dumps(second.to_json())))
    merged = first.merge(restored).compute()
    assert merged == pytest.approx(whole.compute())
    whole.reset()
    assert float(whole.count) == 0


def _all_reduce_worker(rank: int, world: int, init: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    metric = ScoreContrast()
    for seed in range(rank, 4, world):
        metric.update(*_random_pairs(seed))
    metric.all_reduce()
    if rank == 0:
        queue.put(metric.compute())
    dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_across_two_processes_equals_one_pass(tmp_path):
    import torch.multiprocessing as mp

    whole = ScoreContrast()
    for seed in range(4):
        whole.update(*_random_pairs(seed))
    ctx = mp.get_context("fork")
    queue = ctx.SimpleQueue()
    mp.start_processes(_all_reduce_worker, args=(2, f"file://{tmp_path / 'store'}", queue), nprocs=2, start_method="fork")
    assert queue.get() == pytest.approx(whole.compute())


@pytest.mark.parametrize("cls", [ThresholdIoU, ScoreContrast, PointingGame])
def test_an_empty_ignore_mask_equals_no_ignore_mask(cls):
    maps, masks = _random_pairs(7)
    masks[0] = False  # a degenerate pair, dropped by both paths
    plain, ignoring = cls(), cls()
    plain.update(maps, masks)
    ignoring.update(maps, masks, torch.zeros(9, 11, dtype=torch.bool))
    assert plain.compute() == ignoring.compute() and plain.compute()["n_pairs"] == 3


def test_grid_levels_equal_a_binary_search_even_on_and_next_to_grid_points():
    from eclip.metrics.localization import grid_levels

    for step in (0.05, 0.01, 0.1):
        grid = threshold_grid(step)
        values = torch.cat([torch.rand(20000), grid, torch.nextafter(grid, torch.tensor(2.0)),
                            torch.nextafter(grid, torch.tensor(-2.0)), torch.tensor([-0.5, 1.5, 0.0, 1.0])])
        expected = torch.searchsorted(grid, values, right=True, out_int32=True)
        assert torch.equal(grid_levels(values, grid, len(grid) - 1), expected)
