"""The training loop: contrastive training of a CLIP from a config, or fine-tuning of a loaded one.

One loop serves both the vanilla bundled models (class-token / attention pooling, trained from
scratch on synthetic scenes) and ECLIP fine-tuning (a different pooling head, a partial set of
trainable parameters, more loss terms): what differs arrives in a `Run` (built from a recipe by
`eclip.train.recipe.build_run`, or by hand), not copied. The loss is chosen by the run's
`LossTerms` fields, never by what the embedder happens to return.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from eclip.data.loader import TrainingFeed
from eclip.data.pairs import PairSource
from eclip.distributed import barrier, world
from eclip.errors import RecipeError
from eclip.models.folder import save_model_folder
from eclip.precision import PRECISIONS
from eclip.train.checkpoint import RUN_FILES, check_run_folder, check_same_run, load_state, restore_rng, save_state
from eclip.train.losses import ImageEmbedding, LossTerm, LossTerms
from eclip.train.numerics import StepNumerics
from eclip.writing import atomic_write_text, remove_stale_temps

log = logging.getLogger(__name__)

#: (model, (N, 3, H, W) model-ready images) -> ImageEmbedding (the pooled (N, D) embedding, and what
#: the loss terms read: background embeddings, dense features, masks).
ImageEmbedder = Callable[[torch.nn.Module, torch.Tensor], ImageEmbedding]


@dataclass(frozen=True)
class TrainSettings:
    """How long and how fast one run trains (part of its recipe; recorded in the output's config.json).

    `checkpoint_every` says how often the state is saved, not what is trained: a resumed run may
    change it. Settings of how a step is computed (precision, checkpointing) belong here too.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    checkpoint_every: int = 200
    grad_clip: float = 1.0
    precision: str = "fp32"
    grad_checkpointing: bool = False
    local_loss: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise RecipeError(f"`settings.{name}` {getattr(self, name)} must be >= 1")
        if self.precision not in PRECISIONS:
            raise RecipeError(f"`settings.precision` {self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        if not self.lr > 0:
            raise RecipeError(f"`settings.lr` {self.lr} must be > 0")
        for name in ("weight_decay", "warmup", "grad_clip", "seed"):
            if getattr(self, name) < 0:
                raise RecipeError(f"`settings.{name}` {getattr(self, name)} must be >= 0")


def native_image_embedder(model: torch.nn.Module, images: torch.Tensor) -> ImageEmbedding:
    """The model's own pooled embedding (class token / attention pool)."""
    return ImageEmbedding(model.encode_image(images))


def everything(name: str) -> bool:
    """The default trainable-parameter filter: every parameter."""
    return True


@dataclass
class Run:
    """What the loop trains and how: built from a recipe by `eclip.train.recipe.build_run`, or by hand.

    Attributes:
        model: the open_clip CLIP to train (in place).
        tokenizer: captions -> (N, context) tokens.
        source: the image-caption pairs (`eclip.data.pairs.PairSource`).
        settings: steps, batch, learning rate, ...
        record: the model folder's config (arch, open_clip, preprocess, pooling, training), written
            with the weights so the output loads by path; its `training` record is the recipe.
        embedder: images -> `ImageEmbedding` (the pooling head, its masks).
        trainable: which parameters change (by name).
        loss: the loss terms' fields; `terms` the extra terms they make (dense, distillation, ...).
        batchnorm_eval: keep BatchNorm statistics frozen (fine-tuning a ResNet).
    """

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    source: PairSource
    settings: TrainSettings
    record: dict[str, Any]
    embedder: ImageEmbedder = native_image_embedder
    trainable: Callable[[str], bool] = everything
    loss: LossTerms = field(default_factory=LossTerms)
    terms: tuple[LossTerm, ...] = ()
    batchnorm_eval: bool = False


@dataclass
class TrainResult:
    """A finished (or stopped) run: its folder, the loss of each step, the mean of each loss term over this call's
    steps, and the (name, reason) of each pair the source skipped (an undecodable file)."""

    out: Path
    losses: list[float]
    steps_done: int
    seconds: float
    terms: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


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


def run_identity(record: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the saved one: the model config and the recipe, less how often it checkpoints."""
    training = dict(record.get("training") or {})
    training["settings"] = {k: v for k, v in (training.get("settings") or {}).items() if k != "checkpoint_every"}
    return {"model": {k: v for k, v in record.items() if k != "training"}, "training": training}


def train(run: Run, out: Path, *, resume: bool = False, stop_after: int | None = None, progress: bool = True,
          workers: int = 0) -> TrainResult:
    """Train `run.model` contrastively on `run.source`; write checkpoints and the model folder to `out`.

    Args:
        resume: continue from `out/train_state.safetensors` with the same recipe; without it a folder
            that holds a run is refused before anything in it is read.
        stop_after: end this call after that many steps (the schedule still spans `settings.steps`).
        workers: DataLoader processes making, decoding and tokenizing batches (`eclip.data.loader`); 0: this process.
    Under torchrun `settings.batch_size` is the global batch; it must divide by the world size.
    """
    out = Path(out)
    model, settings, record = run.model, run.settings, run.record
    rank, size = world()
    if settings.batch_size % size:
        raise RecipeError(f"`settings.batch_size` {settings.batch_size} does not divide by {size} processes; use a multiple of {size}")
    device = next(model.parameters()).device
    local = settings.batch_size // size
    numerics = StepNumerics(model, run.embedder, device, slice(rank * local, (rank + 1) * local), precision=settings.precision,
                            local_loss=settings.local_loss, grad_checkpointing=settings.grad_checkpointing)
    torch.manual_seed(settings.seed)
    pre = record["preprocess"]
    size = (pre["image_size"], pre["image_size"]) if isinstance(pre["image_size"], int) else tuple(pre["image_size"])
    optimizer = torch.optim.AdamW(param_groups(model, settings.weight_decay, run.trainable), lr=settings.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = cosine_schedule(optimizer, settings.warmup, settings.steps)
    start, losses = 0, []
    check_run_folder(out, resume)  # without resume nothing is read from an existing run
    if rank == 0:
        remove_stale_temps(out, RUN_FILES)
    identity = run_identity(record)
    state = load_state(out) if resume else None
    if state is not None:
        check_same_run(out, state.get("run"), identity)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        numerics.load_state_dict(state.get("scaler"))
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        start, losses = int(state["step"]), list(state.get("losses", []))
        log.info("resumed %s at step %d", out, start)
    end = settings.steps if stop_after is None else min(settings.steps, start + stop_after)

    def checkpoint(step: int) -> None:
        data = feed.state()  # where a stream of shards resumes (collective)
        if rank == 0:
            save_model_folder(out, model, record)
            save_state(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "step": step, "losses": losses, "run": identity, "data": data,
                             "scaler": numerics.state_dict()})
        barrier()

    model.train()
    if run.batchnorm_eval:
        freeze_batchnorm(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, float] = {}
    began = time.time()
    feed = TrainingFeed(run.source, run.tokenizer, settings.batch_size, range(start, end), device, workers=workers,
                        state=state.get("data") if state else None)
    bar = tqdm(range(start, end), initial=start, total=settings.steps, disable=not progress or rank != 0, desc="train", unit="step")
    for step in bar:
        images, tokens, captions = next(feed)
        x = to_model_input(images, size, pre["mean"], pre["std"])
        embedded = numerics.embed(model, x)
        img = gather_with_grad(F.normalize(embedded.pooled, dim=-1))
        text = F.normalize(numerics.encode_text(tokens), dim=-1)
        txt = gather_with_grad(text)
        negatives = valid = None
        if run.loss.background_negatives != "none":  # ECLIP with background negatives: the background pooled outside each mask
            negatives = gather_with_grad(F.normalize(embedded.negatives, dim=-1))
            valid = gather_with_grad(embedded.valid.float()).bool()
        loss = numerics.loss(img, txt, model.logit_scale.exp(), negatives, valid)
        parts = {"contrastive": loss.detach()}
        for term in run.terms:  # the recipe's other loss terms, each already weighted
            value = term(model, x, tokens, embedded, text, captions)
            parts[term.name] = value.detach()
            loss = loss + value
        optimizer.zero_grad(set_to_none=True)
        numerics.backward(loss)
        average_gradients(trained)
        numerics.step(optimizer, trained, settings.grad_clip)
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + float(value)
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
    done = max(1, end - start)
    return TrainResult(out=out, losses=losses, steps_done=end, seconds=time.time() - began,
                       terms={name: total / done for name, total in sums.items()}, skipped=list(getattr(run.source, "skipped", [])))
