"""The training loop: contrastive training of a CLIP from a config, or fine-tuning of a loaded one.

One loop serves both the vanilla bundled models (class-token / attention pooling, trained from
scratch on synthetic scenes) and ECLIP fine-tuning (a different pooling head, a partial set of
trainable parameters): what differs is passed in (`image_embedder`, `trainable`), not copied.
AdamW with decoupled weight decay (none on gains, biases and embeddings), linear warm-up then
cosine decay, seeded, with atomic checkpoints every `checkpoint_every` steps and exact resume.

Distributed data parallel (under `torchrun`, once `torch.distributed` is initialised): each rank
takes its slice of the global batch, image and text features are all-gathered *with* gradients
(`torch.distributed.nn.functional.all_gather`), so every rank computes the loss of the whole
global batch, exactly the single-process loss; gradients are then averaged over ranks (what DDP
does), which gives exactly the single-process gradient, and rank 0 alone writes checkpoints.
"""
from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from eclip.data.loader import TrainingFeed
from eclip.data.pairs import PairSource
from eclip.distributed import barrier, world
from eclip.errors import CheckpointError, OptionError
from eclip.models.folder import save_model_folder
from eclip.train.checkpoint import RUN_FILES, check_run_folder, check_same_run, load_state, restore_rng, save_state
from eclip.train.losses import clip_loss
from eclip.writing import atomic_write_text, remove_stale_temps

log = logging.getLogger(__name__)

# (model, images) -> (N, D) pooled embeddings, or an object with `pooled`, `negatives` (N, D) and
# `valid` (N,) bool for heads that also pool the background (`eclip.train.finetune.PooledWithNegatives`).
ImageEmbedder = Callable[[torch.nn.Module, torch.Tensor], Any]


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

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise OptionError(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise OptionError(f"--lr {self.lr} must be > 0")
        for name in ("weight_decay", "warmup", "grad_clip"):
            if getattr(self, name) < 0:
                raise OptionError(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 0")


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


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(n, D) per rank -> (world * n, D) in rank order, differentiable (identity outside DDP)."""
    if world()[1] == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; its maths is what we need
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x), dim=0)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of `params` over ranks in one flat all-reduce (missing grads count as 0)."""
    import torch.distributed as dist

    size = world()[1]
    if size == 1 or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """Put BatchNorm layers in eval mode: fine-tuning keeps their running statistics (and DDP stays exact)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def to_model_input(images: torch.Tensor, size: tuple[int, int], mean, std) -> torch.Tensor:
    """(N, 3, h, w) in [0, 1] -> (N, 3, H, W) resized (bicubic) and normalised as the model expects."""
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp_(0, 1)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
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
    batchnorm_eval: bool = False,
    workers: int = 0,
) -> TrainResult:
    """Train `model` contrastively on `source`; write checkpoints and the model folder to `out`.

    Args:
        model_config: the eclip model config (open_clip section, preprocess, pooling); written
            with the weights so the output loads by path.
        resume: continue from `out/train_state.safetensors` with the same settings; without it a folder
            that holds a run is refused before anything in it is read.
        stop_after: end this call after that many steps (the schedule still spans `settings.steps`).
        batchnorm_eval: keep BatchNorm statistics frozen (fine-tuning a ResNet).
        workers: DataLoader processes making, decoding and tokenizing batches (`eclip.data.loader`); 0: this process.
    Under torchrun `settings.batch_size` is the global batch; it must divide by the world size.
    """
    out = Path(out)
    rank, size = world()
    if settings.batch_size % size:
        raise CheckpointError(f"--batch-size {settings.batch_size} does not divide by {size} processes; use a multiple of {size}")
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    pre = model_config["preprocess"]
    size = (pre["image_size"], pre["image_size"]) if isinstance(pre["image_size"], int) else tuple(pre["image_size"])
    optimizer = torch.optim.AdamW(param_groups(model, settings.weight_decay, trainable), lr=settings.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = cosine_schedule(optimizer, settings.warmup, settings.steps)
    start, losses = 0, []
    check_run_folder(out, resume)  # without --resume nothing is read from an existing run
    if rank == 0:
        remove_stale_temps(out, RUN_FILES)
    run = {"settings": {k: v for k, v in asdict(settings).items() if k != "checkpoint_every"}, "model": model_config}
    state = load_state(out) if resume else None
    if state is not None:
        check_same_run(out, state.get("run"), run)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        start, losses = int(state["step"]), list(state.get("losses", []))
        log.info("resumed %s at step %d", out, start)
    end = settings.steps if stop_after is None else min(settings.steps, start + stop_after)
    record = {**model_config, "training": {**asdict(settings)}}

    def checkpoint(step: int) -> None:
        if rank == 0:
            save_model_folder(out, model, record)
            save_state(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "step": step, "losses": losses, "run": run})
        barrier()

    model.train()
    if batchnorm_eval:
        freeze_batchnorm(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    began = time.time()
    feed = TrainingFeed(source, tokenizer, settings.batch_size, range(start, end), device, workers=workers)
    bar = tqdm(range(start, end), initial=start, total=settings.steps, disable=not progress or rank != 0, desc="train", unit="step")
    for step in bar:
        images, tokens = next(feed)
        x = to_model_input(images, size, pre["mean"], pre["std"])
        embedded = image_embedder(model, x)
        negatives = valid = None
        if isinstance(embedded, torch.Tensor):
            img = embedded
        else:  # a head that also pools the background (ECLIP with background negatives)
            img = embedded.pooled
            negatives = gather_with_grad(F.normalize(embedded.negatives, dim=-1))
            valid = gather_with_grad(embedded.valid.float()).bool()
        img = gather_with_grad(F.normalize(img, dim=-1))
        txt = gather_with_grad(F.normalize(model.encode_text(tokens), dim=-1))
        loss = clip_loss(img, txt, model.logit_scale.exp(), negatives, valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(trained)
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(trained, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == end:
            checkpoint(step + 1)
    feed.close()
    model.eval()
    if start == end and not (out / "config.json").exists():
        checkpoint(end)
    if rank == 0:
        atomic_write_text(out / "losses.json", json.dumps(losses))
        remove_stale_temps(out, RUN_FILES)
    return TrainResult(out=out, losses=losses, steps_done=end, seconds=time.time() - began)
