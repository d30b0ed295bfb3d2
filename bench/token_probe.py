"""Do a model's dense features know what object they sit on? Shape and colour read from the tokens inside each object.

Segmentation's argmax over the shape prompts can only be right inside an object if the object's
dense tokens tell one shape from another. This measures that on held-out synthetic scenes, per
token whose grid cell an object covers by more than half (its exact instance mask):
- **prompt**: the ITSM's own reading, the argmax over the 8 shape prompts ("a photo of a star.")
  of the token's cosine; what the segmentation argmax sees inside the objects;
- **probe**: a nearest class-mean classifier of the L2-normalised tokens, its means fitted on the
  scenes of the validation seed and scored on those of the test seed, for the shape and for the
  colour: whether the information is in the token at all, whatever the text side says;
- **object mean**: the same shape probe and prompt argmax on the mean of each object's tokens
  (one vector per object): whether the shape is there once an object's tokens are pooled, as a
  method that groups the tokens of one object before reading them could do.
- **by block** (ViT, `--blocks`): the shape probe on the tokens after each block, put through the
  final norm and projection as the last block's are: where in depth the shape enters the tokens.
Chance is 12.5% for each (8 shapes, 8 colours).

    python bench/token_probe.py --model synth-vit --model synth-rn --n 150 --json bench/results/token-probe.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eclip.data.synthetic import CLASSNAMES, COLOURS, TEST_SEED, VALIDATION_SEED, SceneConfig, SceneStream
from eclip.models.loading import load_model


def block_dense(model, image: torch.Tensor) -> list[torch.Tensor]:
    """(h, w, D) projected patch tokens after the embedding and after each block of a ViT (the last: its dense features)."""
    x, grids = model.embed(image), []
    for block in range(model.num_layers + 1):
        if block:
            x, _ = model.forward_blocks(x, block - 1, block)
        grids.append(model.tokens_to_grid(model.head(x)[:, 1:], image)[0])
    return grids


def object_tokens(model, seed: int, n: int, size: int, blocks: bool = False
                  ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Readings of the tokens inside objects of `n` scenes of `seed`: [(T, D) L2-normalised dense tokens], or with
    `blocks` (ViT) one (T, D) per block as `block_dense` reads them, all from one pass over the scenes; and their
    (T,) shape and colour indices and the (T,) index of the object each belongs to."""
    from PIL import Image

    readings: list[list[torch.Tensor]] = []
    shapes, colours, owners = [], [], []
    colour_names = list(COLOURS)
    for scene in SceneStream(seed, SceneConfig(image_size=size), count=n):
        image = model.preprocess(Image.fromarray(scene.image))
        with torch.no_grad():
            grids = block_dense(model, image) if blocks else [model.pooled_and_dense(image)[1][0]]
        grids = [F.normalize(grid.float(), dim=-1) for grid in grids]  # (h, w, D) each
        readings = readings or [[] for _ in grids]
        for obj in scene.objects:
            covered = torch.from_numpy((scene.instances == obj.instance).astype(np.float32))[None, None]
            cells = F.adaptive_avg_pool2d(covered, grids[0].shape[:2])[0, 0] > 0.5
            for tokens, grid in zip(readings, grids):
                tokens.append(grid[cells])
            shapes += [CLASSNAMES.index(obj.shape)] * int(cells.sum())
            colours += [colour_names.index(obj.colour)] * int(cells.sum())
            owners += [len(readings[0]) - 1] * int(cells.sum())  # the object's place in each reading's list
    return [torch.cat(tokens) for tokens in readings], torch.tensor(shapes), torch.tensor(colours), torch.tensor(owners)


def object_means(tokens: torch.Tensor, labels: torch.Tensor, owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, D) L2-normalised mean token of each object that has tokens, and its (O,) label."""
    objects = owners.unique()
    means = torch.stack([tokens[owners == o].mean(0) for o in objects])
    return F.normalize(means, dim=1), torch.stack([labels[owners == o][0] for o in objects])


def class_mean_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Share of `test` whose nearest (cosine) class mean of `train` has its label; a class absent from `train` never wins."""
    means = torch.stack([F.normalize(train[train_labels == c].mean(0), dim=0) if (train_labels == c).any()
                         else torch.zeros(train.shape[1]) for c in range(8)])
    return float(((test @ means.T).argmax(dim=1) == test_labels).float().mean())


def probe_blocks(model, n: int) -> list[float]:
    """The shape probe's accuracy on the tokens after the embedding (0) and after each block of a ViT."""
    size = model.image_size[0]
    fit, fit_shapes, _, _ = object_tokens(model, VALIDATION_SEED, n, size, blocks=True)
    test, shapes, _, _ = object_tokens(model, TEST_SEED, n, size, blocks=True)
    return [class_mean_accuracy(f, fit_shapes, t, shapes) for f, t in zip(fit, test)]


def probe(name: str, n: int, blocks: bool = False) -> dict:
    model = load_model(name)
    size = model.image_size[0]
    (fit,), fit_shapes, fit_colours, fit_owners = object_tokens(model, VALIDATION_SEED, n, size)
    (test,), shapes, colours, owners = object_tokens(model, TEST_SEED, n, size)
    prompts = model.encode_text([f"a photo of a {c}." for c in CLASSNAMES]).float()
    fit_objects, fit_object_shapes = object_means(fit, fit_shapes, fit_owners)
    objects, object_shapes = object_means(test, shapes, owners)
    return {"model": name, "n": n, "tokens": len(test), "objects": len(objects),
            "shape_prompt": float(((test @ prompts.T).argmax(dim=1) == shapes).float().mean()),
            "shape_probe": class_mean_accuracy(fit, fit_shapes, test, shapes),
            "colour_probe": class_mean_accuracy(fit, fit_colours, test, colours),
            "object_shape_prompt": float(((objects @ prompts.T).argmax(dim=1) == object_shapes).float().mean()),
            "object_shape_probe": class_mean_accuracy(fit_objects, fit_object_shapes, objects, object_shapes),
            **({"shape_probe_by_block": probe_blocks(model, n)} if blocks and model.arch == "vit" else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="bundled name or folder (repeat)")
    parser.add_argument("--n", type=int, default=150, help="scenes per seed")
    parser.add_argument("--blocks", action="store_true", help="ViTs: the shape probe after each block too")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = [probe(name, args.n, args.blocks) for name in args.model]
    print("| model | object tokens | shape, prompt argmax % | shape, probe % | colour, probe % | objects | "
          "object mean: shape, prompt argmax % | object mean: shape, probe % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in records:
        print(f"| `{r['model']}` | {r['tokens']} | {100 * r['shape_prompt']:.1f} | {100 * r['shape_probe']:.1f} | "
              f"{100 * r['colour_probe']:.1f} | {r['objects']} | {100 * r['object_shape_prompt']:.1f} | "
              f"{100 * r['object_shape_probe']:.1f} |")
    for r in records:
        if "shape_probe_by_block" in r:
            print(f"{r['model']}, shape probe % after the embedding and each block: "
                  + ", ".join(f"{100 * a:.1f}" for a in r["shape_probe_by_block"]))
    if args.json:
        from eclip.writing import atomic_write_text

        atomic_write_text(args.json, json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
