"""`eclip train`: train a small CLIP from a config, or fine-tune any CLIP with ECLIP's masked max pooling.

Single process, or data parallel under torchrun (`torchrun --nproc_per_node N --no-python eclip
train ...`): each rank takes a slice of the global batch, rank 0 writes the checkpoints.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from eclip.cli.app import app


@app.command("train")
def train_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the model (config.json + model.safetensors) and the training state."),
    model: str = typer.Option(None, "--model", "-m",
                              help="Fine-tune this model (bundled name, open_clip name with --pretrained, or model folder) "
                                   "instead of training --config from scratch."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip tag or local checkpoint file for --model."),
    config: str = typer.Option("synth-vit", "--config", help="Architecture to train from scratch: synth-vit, synth-rn, or a JSON file."),
    pooling: str = typer.Option(None, "--pooling",
                                help="Pooling head: attention (the model's own), avg, max, masked_max (ECLIP). "
                                     "Default: attention from scratch, masked_max when fine-tuning."),
    max_over: str = typer.Option("raw", "--max-over", help="max / masked_max over the raw or the L2-normalized dense features."),
    mask_source: str = typer.Option("cls_attention", "--mask-source", help="Mask: cls_attention, rollout (ViT), similarity, none."),
    mask_rule: str = typer.Option("mass", "--mask-rule", help="mass: keep --mask-mass of the attention; topk: the --mask-topk fraction."),
    mask_mass: float = typer.Option(0.6, "--mask-mass", min=0.001, max=1.0, help="Share of the attention mass the mask keeps."),
    mask_topk: float = typer.Option(0.3, "--mask-topk", min=0.001, max=1.0, help="Fraction of locations the top-k mask keeps."),
    mask_from: str = typer.Option("frozen", "--mask-from", help="Masks from a frozen copy of the starting model, or the current model."),
    background_negatives: str = typer.Option("none", "--background-negatives",
                                             help="masked_max: each caption must also beat the background of every image of the "
                                                  "batch, pooled outside each mask by the head's max or by the mean: none, max, avg "
                                                  "(ours; see README, ECLIP variants)."),
    captions: str = typer.Option("all", "--captions",
                                 help="Synthetic captions: all templates, objects (none names the background), "
                                      "or shapes (objects plus 'a photo of a star.')."),
    train_part: str = typer.Option("all", "--train", help="What is updated: all, visual, or last:N (last N image blocks + projection)."),
    data: str = typer.Option("synthetic", "--data",
                             help="Pairs: synthetic, a CSV of image_path,caption, a folder of images + same-stem .txt, "
                                  "or WebDataset .tar shards (a file, a folder, or shard-{000..009}.tar)."),
    steps: int = typer.Option(2000, min=1, help="Total optimisation steps (the cosine schedule spans them)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Image-text pairs per step (the global batch under torchrun)."),
    lr: float = typer.Option(5e-4, min=1e-9, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(0.1, "--weight-decay", min=0.0),
    warmup: int = typer.Option(100, min=0, help="Linear warm-up steps."),
    seed: int = typer.Option(0, min=0, help="Seed of the model initialisation (from scratch) and of the data order (files)."),
    data_seed: int = typer.Option(1000, "--data-seed", min=0, help="Seed of the synthetic training scenes; evaluate on other seeds."),
    scene_size: int = typer.Option(None, "--scene-size", min=16, max=4096,
                                   help="Pixels per side of synthetic scenes and of file images "
                                        "(default: 96 from scratch; fine-tuning: what the model was trained on, else its size)."),
    max_objects: int = typer.Option(3, "--max-objects", min=1, max=255, help="Objects per scene, at most."),
    workers: int = typer.Option(0, "--workers", min=0,
                                help="DataLoader processes drawing scenes or decoding images and tokenizing captions ahead of "
                                     "training (0: in this process). The batches are the same with any number."),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", min=1, help="Steps between atomic checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ... (under torchrun: cuda picks each rank's GPU)."),
    threads: int = typer.Option(0, min=0, help="CPU threads for torch (0: torch's default)."),
) -> None:
    """Train a CLIP contrastively; the output folder loads with --model PATH and keeps its pooling head."""
    from eclip.cli.checks import check_pretrained
    from eclip.device import resolve_device
    from eclip.train.checkpoint import check_run_folder
    from eclip.writing import check_output_folder

    check_pretrained(model, pretrained)
    resolve_device(device)
    check_output_folder(out)
    check_run_folder(out, resume)

    import torch

    from eclip.data.pairs import SyntheticPairs, open_pairs
    from eclip.data.synthetic import CAPTION_SETS
    from eclip.distributed import init_distributed, leave_distributed, world
    from eclip.errors import ModelLoadError
    from eclip.models.folder import architecture_config, build_open_clip
    from eclip.models.loading import load_model, simple_tokenizer, wrap
    from eclip.models.pooling import PoolingConfig
    from eclip.train.finetune import make_embedder, model_config, trainable_filter
    from eclip.train.loop import TrainSettings, native_image_embedder, train

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device, own_group = init_distributed(device)
    head = PoolingConfig(head=pooling or ("masked_max" if model else "attention"), max_over=max_over, mask_source=mask_source,
                         mask_rule=mask_rule, mask_mass=mask_mass, mask_topk=mask_topk, mask_from=mask_from)
    if model:
        adapter = load_model(model, pretrained, device=device)
        net, tokenizer = adapter.model, adapter.tokenizer
        base = model_config(adapter, model, pretrained)
        start = {"model": model, "pretrained": pretrained}
        trained_on = (getattr(adapter, "config", None) or {}).get("training", {}).get("extra", {}).get("data", {})
        size = scene_size or int(trained_on.get("image_size") or adapter.image_size[0])
    else:
        base = architecture_config(config)
        torch.manual_seed(seed)
        net = build_open_clip(base).to(device)
        tokenizer, _ = simple_tokenizer(int(base["open_clip"]["text_cfg"].get("context_length", 77)))
        pre = base["preprocess"]
        adapter = wrap(net, tokenizer, name=config, image_size=pre["image_size"] if isinstance(pre["image_size"], list)
                       else (pre["image_size"], pre["image_size"]), mean=pre["mean"], std=pre["std"],
                       context_length=int(base["open_clip"]["text_cfg"].get("context_length", 77)))
        start = {"config": config}
        size = scene_size or 96
    arch = base.get("arch", adapter.arch)
    trainable = trainable_filter(train_part, net, arch)
    if captions not in CAPTION_SETS:
        raise ModelLoadError(f"--captions {captions!r} is unknown; use one of {', '.join(CAPTION_SETS)}")
    embedder = native_image_embedder if head.is_native and background_negatives == "none" \
        else make_embedder(adapter, head, background_negatives)
    data_record = {"kind": "synthetic", "seed": data_seed, "image_size": size, "max_objects": max_objects, "captions": captions} \
        if data == "synthetic" \
        else {"kind": "files", "path": data, "image_size": size}
    source = open_pairs(data, size, seed, synthetic=lambda: SyntheticPairs(seed=data_seed, image_size=size, max_objects=max_objects,
                                                                           caption_templates=CAPTION_SETS[captions]))
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup, seed=seed,
                             checkpoint_every=checkpoint_every,
                             extra={"data": data_record, "start": start, "train": train_part,
                                    "loss": {"background_negatives": background_negatives}})
    record = {**base, "pooling": head.to_json()}
    rank = world()[0]
    try:
        result = train(net, record, source, tokenizer, out, settings, image_embedder=embedder, trainable=trainable,
                       resume=resume, batchnorm_eval=bool(model) and arch == "resnet", workers=workers)
    finally:
        leave_distributed(own_group)
    if rank != 0:
        return
    skipped = getattr(source, "skipped", [])
    for name, reason in skipped[:20]:
        typer.echo(f"eclip: skipped {name}: {reason}", err=True)
    summary = {"out": str(result.out), "steps": result.steps_done, "seconds": round(result.seconds, 1),
               "final_loss": round(sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), 4), "pooling": head.head,
               "skipped": len(skipped)}
    typer.echo(json.dumps(summary))
