"""`eclip train`: train a small CLIP from a config, on synthetic scenes, with checkpoints and resume."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from eclip.cli.app import app


@app.command("train")
def train_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the model (config.json + model.safetensors) and the training state."),
    config: str = typer.Option("synth-vit", "--config", help="Architecture to train from scratch: synth-vit, synth-rn, or a JSON file."),
    steps: int = typer.Option(2000, help="Total optimisation steps (the cosine schedule spans them)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Image-text pairs per step."),
    lr: float = typer.Option(5e-4, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(0.1, "--weight-decay"),
    warmup: int = typer.Option(100, help="Linear warm-up steps."),
    seed: int = typer.Option(0, help="Seed of the model initialisation."),
    data_seed: int = typer.Option(1000, "--data-seed", help="Seed of the synthetic training scenes; evaluate on other seeds."),
    scene_size: int = typer.Option(96, "--scene-size", help="Pixels per side of the rendered scenes."),
    max_objects: int = typer.Option(3, "--max-objects", help="Objects per scene, at most."),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", help="Steps between atomic checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
) -> None:
    """Train a CLIP contrastively on synthetic scenes; the output folder loads with --model PATH."""
    import torch

    from eclip.data.pairs import SyntheticPairs
    from eclip.models.folder import architecture_config, build_open_clip
    from eclip.models.loading import simple_tokenizer
    from eclip.train.loop import TrainSettings, train

    if threads:
        torch.set_num_threads(threads)
    model_config = architecture_config(config)
    torch.manual_seed(seed)
    model = build_open_clip(model_config)
    tokenizer, _ = simple_tokenizer(int(model_config["open_clip"]["text_cfg"].get("context_length", 77)))
    data = {"kind": "synthetic", "seed": data_seed, "image_size": scene_size, "max_objects": max_objects}
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                             seed=seed, checkpoint_every=checkpoint_every, extra={"data": data, "config": config})
    source = SyntheticPairs(seed=data_seed, image_size=scene_size, max_objects=max_objects)
    result = train(model, model_config, source, tokenizer, out, settings, resume=resume)
    summary = {"out": str(result.out), "steps": result.steps_done, "seconds": round(result.seconds, 1),
               "final_loss": round(sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), 4)}
    typer.echo(json.dumps(summary))
