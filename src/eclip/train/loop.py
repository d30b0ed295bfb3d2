"""The training loop: contrastive training of a CLIP from a config, or fine-tuning of a loaded one.

One loop serves both the vanilla bundled models (class-token / attention pooling, trained from
scratch on synthetic scenes) and ECLIP fine-tuning (a different pooling head, a partial set of
trainable parameters): what differs is passed in (`image_embedder`, `trainable`), not copied.
AdamW with decoupled weight decay (none on gains, biases and embeddings), linear warm-up then
cosine decay, seeded, with atomic checkpoints every `checkpoint_every` steps and exact resume.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from eclip.data.pairs import PairSource
from eclip.errors import CheckpointError
from eclip.models.folder import save_model_folder
from eclip.train.checkpoint import load_state, restore_rng, save_state
from eclip.train.losses import clip_loss

log = logging.getLogger(__name__)

ImageEmbedder = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class TrainSettings:
    """Hyper-parameters of one run (recorded in the output's config.json)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    checkpoint_every: int = 200
    grad_clip: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    out: Path
    losses: list[float]
    steps_done: int
    seconds: float


def native_image_embedder(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's own pooled embedding (class token / attention pool)."""
    return model.encode_image(images)


def param_groups(model: torch.nn.Module, weight_decay: float, trainable: Callable[[str], bool]) -> list[dict]:
    """AdamW groups: decay on matrices only (not gains, biases, embeddings, the temperature)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not trainable(name):
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        is_matrix = p.ndim >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to zero at `steps`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_model_input(images: torch.Tensor, size: tuple[int, int], mean, std) -> torch.Tensor:
    """(N, 3, h, w) in [0, 1] -> (N, 3, H, W) resized (bicubic) and normalised as the model expects."""
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp_(0, 1)
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def train(
    model: torch.nn.Module,
    model_config: dict[str, Any],
    source: PairSource,
    tokenizer: Callable[[list[str]], torch.Tensor],
    out: Path,
    settings: TrainSettings,
    *,
    image_embedder: ImageEmbedder = native_image_embedder,
    trainable: Callable[[str], bool] = lambda name: True,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` contrastively on `source`; write checkpoints and the model folder to `out`.

    Args:
        model_config: the eclip model config (open_clip section, preprocess, pooling); written
            with the weights so the output loads by path.
        resume: continue from `out/train_state.pt`; without it an existing state is an error.
        stop_after: end this call after that many steps (the schedule still spans `settings.steps`).
    """
    out = Path(out)
    torch.manual_seed(settings.seed)
    pre = model_config["preprocess"]
    size = (pre["image_size"], pre["image_size"]) if isinstance(pre["image_size"], int) else tuple(pre["image_size"])
    optimizer = torch.optim.AdamW(param_groups(model, settings.weight_decay, trainable), lr=settings.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = cosine_schedule(optimizer, settings.warmup, settings.steps)
    start, losses = 0, []
    state = load_state(out)
    if state is not None and not resume:
        raise CheckpointError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        start, losses = int(state["step"]), list(state.get("losses", []))
        log.info("resumed %s at step %d", out, start)
    end = settings.steps if stop_after is None else min(settings.steps, start + stop_after)
    record = {**model_config, "training": {**asdict(settings)}}

    def checkpoint(step: int) -> None:
        save_model_folder(out, model, record)
        save_state(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "step": step, "losses": losses})

    model.train()
    began = time.time()
    bar = tqdm(range(start, end), initial=start, total=settings.steps, disable=not progress, desc="train", unit="step")
    for step in bar:
        images, captions = source.batch(step, settings.batch_size)
        x = to_model_input(images, size, pre["mean"], pre["std"])
        img = F.normalize(image_embedder(model, x), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        loss = clip_loss(img, txt, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == end:
            checkpoint(step + 1)
    model.eval()
    if start == end and not (out / "config.json").exists():
        checkpoint(end)
    (out / "losses.json").write_text(json.dumps(losses))
    return TrainResult(out=out, losses=losses, steps_done=end, seconds=time.time() - began)
