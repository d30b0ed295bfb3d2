"""`eclip synth`: write a folder of synthetic scenes with exact masks and captions (the offline benchmark)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from eclip.cli import options
from eclip.cli.app import app


@app.command("synth", short_help="Write synthetic scenes with exact masks and captions.")
def synth_command(
    out: Path = typer.Argument(..., metavar="OUT", show_default=False,
                               help="Output folder (new, empty, or an earlier synthetic dataset to overwrite)."),
    n: int = typer.Option(200, "--n", metavar="N", min=1, help="Number of scenes."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", min=0,
                             help="Dataset seed; scene i uses a seed derived from (SEED, i), so seeds never overlap."),
    size: int = options.size(96, "Pixels per side."),
    min_objects: int = typer.Option(1, "--min-objects", metavar="N", min=1, help="Objects per scene, at least."),
    max_objects: int = typer.Option(3, "--max-objects", metavar="N", min=1, max=255, help="Objects per scene, at most."),
    clutter: int = typer.Option(4, "--clutter", metavar="N", min=0, help="Distractor marks (lines, dots) per scene, at most; 0 for none."),
    captions: str = typer.Option("all", "--captions", metavar="SET",
                                 help="Caption templates: all, objects (none names the background), or shapes (objects plus "
                                      "'a photo of a star.')."),
    webdataset: bool = typer.Option(False, "--webdataset",
                                    help="Write image-text pairs as WebDataset shards (OUT/shard-000000.tar, ...) for "
                                         "`eclip train --data OUT`, instead of a dataset folder with masks."),
    shard_size: int = typer.Option(10000, "--shard-size", metavar="N", min=1, help="Scenes per shard (--webdataset)."),
    workers: int = options.workers("Processes writing shards in parallel (--webdataset)."),
    image_format: str = typer.Option("png", "--format", metavar="NAME", help="Image format in the shards (--webdataset): png or jpg."),
) -> None:
    """Write OUT/images, OUT/masks (class index), OUT/instances, OUT/annotations.json and OUT/meta.json.

    Read it back with `eclip.data.synthetic.SyntheticDataset(OUT)`; masks are exact, captions name
    every object ("a red star next to a blue circle") and the background.
    """
    from tqdm import tqdm

    from eclip.data.synthetic import CAPTION_SETS, SceneConfig, write_dataset
    from eclip.errors import DatasetError
    from eclip.writing import check_output_folder

    check_output_folder(out, "OUT")

    if captions not in CAPTION_SETS:
        raise DatasetError(f"--captions {captions!r} is unknown; use one of {', '.join(CAPTION_SETS)}")
    config = SceneConfig(image_size=size, min_objects=min(min_objects, max_objects), max_objects=max_objects,
                         max_clutter=clutter, caption_templates=CAPTION_SETS[captions])
    start = time.perf_counter()
    if webdataset:
        from eclip.data.shards import write_shards

        shards = write_shards(out, n, seed, config, shard_size, workers, image_format)
        typer.echo(f"wrote {n} scene-caption pairs in {len(shards)} shards (seed {seed}) to {out} "
                   f"in {time.perf_counter() - start:.1f} s")
        return
    with tqdm(total=n, desc="synth", unit="scene", file=sys.stderr) as bar:
        write_dataset(out, n, seed, config, progress=bar.update)
    seconds = time.perf_counter() - start
    typer.echo(f"wrote {n} scenes ({size}x{size} px, {config.min_objects}-{max_objects} objects, seed {seed}) "
               f"to {out} in {seconds:.1f} s")
