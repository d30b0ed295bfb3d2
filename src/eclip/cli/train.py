"""`eclip train`: train a small CLIP from a config, or fine-tune any CLIP with ECLIP's masked max pooling.

The options build one fine-tune recipe (`eclip.train.recipe.FinetuneRecipe`), on top of
`--recipe` when given (a recipe file, or a model whose config.json records one); the library runs
it (`eclip.train.finetune`). Single process, or data parallel under torchrun (`torchrun
--nproc_per_node N --no-python eclip train ...`): each rank takes a slice of the global batch,
rank 0 writes the checkpoints.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app

#: The recipe field (or library parameter) each option sets: library messages name the field, the CLI prints the flag.
FLAGS = {
    "settings.steps": "--steps", "settings.batch_size": "--batch-size", "settings.lr": "--lr",
    "settings.weight_decay": "--weight-decay", "settings.warmup": "--warmup", "settings.seed": "--seed",
    "settings.checkpoint_every": "--checkpoint-every", "settings.grad_clip": "--grad-clip", "settings.precision": "--precision",
    "settings.grad_checkpointing": "--grad-checkpointing", "settings.local_loss": "--local-loss",
    "pooling.head": "--pooling", "pooling.max_over": "--max-over", "pooling.mask_source": "--mask-source",
    "pooling.mask_rule": "--mask-rule", "pooling.mask_mass": "--mask-mass", "pooling.mask_topk": "--mask-topk",
    "pooling.mask_from": "--mask-from", "loss.background_negatives": "--background-negatives", "loss.dense": "--dense",
    "loss.dense_weight": "--dense-weight", "loss.dense_margin": "--dense-margin",
    "loss.phrases": "--phrases", "loss.phrase_set": "--phrase-set", "loss.distill": "--distill", "loss.l2sp": "--l2sp",
    "data.captions": "--captions", "data.seed": "--data-seed", "data.image_size": "--scene-size", "data.max_objects": "--max-objects",
    "data.path": "--data", "data.kind": "--data", "train": "--train", "start": "--model / --config", "recipe": "--recipe",
    "out": "--out", "resume": "--resume",
}


def in_flags(message: str) -> str:
    """A library message with each `field` it names replaced by the option that sets it."""
    return re.sub(r"`([a-z_.]+)`", lambda m: FLAGS.get(m.group(1), m.group(0)), message)


def _precision(precision: str | None, recipe: str | None, device: str) -> str | None:
    """--precision, else None (the recipe's) with --recipe, else the device's default (`eclip.precision.TRAIN_CUDA_DEFAULT` on a GPU)."""
    from eclip.precision import TRAIN_CUDA_DEFAULT

    if precision is not None or recipe:
        return precision
    return TRAIN_CUDA_DEFAULT if device.startswith("cuda") else None


def _given(**values):
    """The options the command line gave (None means: keep the recipe's value)."""
    return {k: v for k, v in values.items() if v is not None}


@app.command("train", short_help="Train a CLIP, or fine-tune one with ECLIP's masked max pooling.")
def train_command(
    out: Path = options.out_folder(..., "Output folder: the model (config.json + model.safetensors) and the training state."),
    model: str = options.model(None, "Fine-tune this model (bundled name, open_clip name with --pretrained, or model folder) "
                                     "instead of training --config from scratch."),
    pretrained: str = options.pretrained("open_clip tag or local checkpoint file for --model."),
    config: str = typer.Option(None, "--config", help="Architecture to train from scratch: synth-vit (default), synth-rn, or a JSON file."),
    recipe: str = typer.Option(None, "--recipe",
                               help="Start from this recipe: a JSON file (eclip.train.FinetuneRecipe.to_json), or a model folder / "
                                    "bundled name whose config.json records how it was made. Options given here override it."),
    pooling: str = typer.Option(None, "--pooling",
                                help="Pooling head: attention (the model's own), avg, max, masked_max (ECLIP). "
                                     "Default: attention from scratch, masked_max when fine-tuning."),
    max_over: str = typer.Option(None, "--max-over", help="max / masked_max over the raw (default) or the L2-normalized dense features."),
    mask_source: str = typer.Option(None, "--mask-source", help="Mask: cls_attention (default), rollout (ViT), similarity, none."),
    mask_rule: str = typer.Option(None, "--mask-rule",
                                  help="mass (default): keep --mask-mass of the attention; topk: the --mask-topk fraction."),
    mask_mass: float = typer.Option(None, "--mask-mass", min=0.001, max=1.0, help="Share of the attention mass the mask keeps (0.6)."),
    mask_topk: float = typer.Option(None, "--mask-topk", min=0.001, max=1.0, help="Fraction of locations the top-k mask keeps (0.3)."),
    mask_from: str = typer.Option(None, "--mask-from",
                                  help="Masks from a frozen copy of the starting model (frozen, default) or the current model."),
    background_negatives: str = typer.Option(None, "--background-negatives",
                                             help="masked_max: each caption must also beat the background of every image of the "
                                                  "batch, pooled outside each mask by the head's max or by the mean: none (default), "
                                                  "max, avg (ours; see README, ECLIP variants)."),
    dense: str = typer.Option(None, "--dense",
                              help="Dense term (ours): each caption's foreground tokens (the free-attention mask) must score above its "
                                   "background tokens against the full caption embedding: none (default), margin, softmax, peak. "
                                   "Any head."),
    dense_weight: float = typer.Option(None, "--dense-weight", min=0.0, help="Weight of the dense term (1.0)."),
    dense_margin: float = typer.Option(None, "--dense-margin", min=0.0, max=2.0,
                                       help="margin form: the foreground's mean cosine above the background's by this much (0.3)."),
    phrases: float = typer.Option(None, "--phrases", min=0.0,
                                  help="Phrase term (ours): each colour-shape phrase of a caption must beat the batch's other "
                                       "phrases somewhere on its image's foreground; its weight (0: off). Reads the synthetic "
                                       "captions' phrases."),
    phrase_set: str = typer.Option(None, "--phrase-set",
                                   help="The phrase term's softmax over the batch's phrases (batch, default) or every colour-shape "
                                        "phrase of the synthetic scenes (vocabulary: colour alone cannot win)."),
    distill: float = typer.Option(None, "--distill", min=0.0,
                                  help="Keep zero-shot (ours): weight of 1 - cosine of the served image embedding and the caption "
                                       "embedding with the starting model's (0: off)."),
    l2sp: float = typer.Option(None, "--l2sp", min=0.0,
                               help="Keep zero-shot (ours): weight of the squared distance of the trained weights from the starting "
                                    "weights, L2-SP (0: off). The text tower frozen is --train visual."),
    captions: str = typer.Option(None, "--captions",
                                 help="Synthetic captions: all (default) templates, objects (none names the background), "
                                      "or shapes (objects plus 'a photo of a star.'). With --data files: the set they hold, recorded."),
    train_part: str = typer.Option(None, "--train",
                                   help="What is updated: all (default), visual, or last:N (last N image blocks + projection)."),
    data: str = typer.Option(None, "--data",
                             help="Pairs: synthetic (default), a CSV of image_path,caption, a folder of images + same-stem .txt, "
                                  "or WebDataset .tar shards (a file, a folder, or shard-{000..009}.tar)."),
    steps: int = typer.Option(None, min=1, help="Total optimisation steps (the cosine schedule spans them; 2000)."),
    batch_size: int = options.batch_size(None, "Image-text pairs per step (the global batch under torchrun; 64)."),
    lr: float = typer.Option(None, min=1e-9, help="Peak learning rate (AdamW; 5e-4)."),
    weight_decay: float = typer.Option(None, "--weight-decay", min=0.0, help="AdamW's decoupled weight decay on matrices (0.1)."),
    warmup: int = typer.Option(None, min=0, help="Linear warm-up steps (100)."),
    seed: int = typer.Option(None, min=0, help="Seed of the model initialisation (from scratch) and of the data order (files; 0)."),
    data_seed: int = typer.Option(None, "--data-seed", min=0,
                                  help="Seed of the synthetic training scenes (1000); evaluate on other seeds."),
    scene_size: int = options.scene_size(None, "Pixels per side of synthetic scenes and of file images (default: 96 from scratch; "
                                               "fine-tuning: what the model was trained on, else its size)."),
    max_objects: int = typer.Option(None, "--max-objects", min=1, max=255, help="Objects per scene, at most (3)."),
    workers: int = options.workers("DataLoader processes drawing scenes or decoding images and tokenizing captions ahead of "
                                   "training (0: in this process). The batches are the same with any number."),
    precision: str = options.precision(None, "fp32, bf16 or fp16 (autocast; fp16 with a loss scaler). Default: the recipe's; "
                                             "without --recipe fp32 on a CPU, bf16 on a GPU."),
    grad_checkpointing: bool = typer.Option(None, "--grad-checkpointing/--no-grad-checkpointing",
                                            help="Recompute each transformer block in the backward: less memory, same gradients."),
    local_loss: bool = typer.Option(None, "--local-loss/--no-local-loss",
                                    help="torchrun: each rank scores its own pairs against all gathered ones (open_clip's "
                                         "--local-loss; the same gradient, less memory)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", min=1, help="Steps between atomic checkpoints (200)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    device: str = options.device(f"{options.DEVICE_HELP} (under torchrun: cuda picks each rank's GPU)."),
    threads: int = typer.Option(0, min=0, help="CPU threads for torch (0: torch's default)."),
) -> None:
    """Train a CLIP contrastively; the output folder loads with --model PATH and keeps its pooling head."""
    from eclip.errors import EclipError

    try:
        summary = _train(out, model, pretrained, config, recipe, resume, device, threads, workers,
                         pooling=_given(head=pooling, max_over=max_over, mask_source=mask_source, mask_rule=mask_rule,
                                        mask_mass=mask_mass, mask_topk=mask_topk, mask_from=mask_from),
                         settings=_given(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                                         seed=seed, checkpoint_every=checkpoint_every, grad_checkpointing=grad_checkpointing,
                                         local_loss=local_loss, precision=_precision(precision, recipe, device)),
                         loss=_given(background_negatives=background_negatives, dense=dense, dense_weight=dense_weight,
                                     dense_margin=dense_margin, phrases=phrases, phrase_set=phrase_set,
                                     distill=distill, l2sp=l2sp),
                         data=data, data_options=_given(seed=data_seed, image_size=scene_size, max_objects=max_objects, captions=captions),
                         train_part=train_part)
    except EclipError as err:
        raise type(err)(in_flags(str(err))) from err
    if summary is not None:
        typer.echo(json.dumps(summary))


def build_recipe(model: str | None, pretrained: str | None, config: str | None, recipe: str | None, *, pooling: dict,
                 settings: dict, loss: dict, data: str | None, data_options: dict, train_part: str | None):
    """The recipe the options describe: `--recipe` (or the defaults) with each given option in its place."""
    import dataclasses

    from eclip.models.pooling import PoolingConfig
    from eclip.train.recipe import DataRecipe, FinetuneRecipe, Start, read_recipe

    if recipe:
        base = read_recipe(recipe)
    else:
        base = FinetuneRecipe(pooling=PoolingConfig(head="masked_max" if model else "attention"))
    if model:
        start = Start(model=model, pretrained=pretrained)
    elif config or base.start is None:
        start = Start(config=config or "synth-vit")
    else:
        start = base.start
    same = data is None or data == (base.data.path or "synthetic")
    if same and base.data.kind == "synthetic":
        new_data = dataclasses.replace(base.data, **data_options)
    else:  # other files, or files in place of scenes: only the size (and the captions of the same files) carry over
        carried = {"image_size": base.data.image_size, **({"captions": base.data.captions} if same else {})}
        new_data = DataRecipe.from_spec(data or base.data.path, **{**carried, **data_options})
    return dataclasses.replace(base, start=start, pooling=dataclasses.replace(base.pooling, **pooling),
                               settings=dataclasses.replace(base.settings, **settings), loss=dataclasses.replace(base.loss, **loss),
                               data=new_data, train=train_part or base.train)


def _train(out: Path, model, pretrained, config, recipe, resume: bool, device: str, threads: int, workers: int, **options) -> dict | None:
    """Check the options, build the recipe, fine-tune; the summary to print (rank 0), or None (other ranks)."""
    from eclip.cli.checks import up_front
    from eclip.train.checkpoint import check_run_folder

    up_front(out=out, models=[model] if model else (), pretrained=pretrained, device=device)
    check_run_folder(out, resume)
    plan = build_recipe(model, pretrained, config, recipe, **options)

    import torch

    from eclip.train.recipe import finetune

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    result = finetune(None, plan, None, out, resume=resume, device=device, workers=workers)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    for name, reason in result.skipped[:20]:
        typer.echo(f"eclip: skipped {name}: {reason}", err=True)
    return {"out": str(result.out), "steps": result.steps_done, "seconds": round(result.seconds, 1),
            "final_loss": round(sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), 4), "pooling": plan.pooling.head,
            "terms": {name: round(value, 4) for name, value in result.terms.items()}, "skipped": len(result.skipped)}
