"""Where the semantic shift lives: the score contrast of the ITSM split by text direction and by feature norm.

ECLIP (Li et al. 2022, arXiv 2209.07046) reads the shift as the pooling swapping the meaning of
foreground and background features. This measures, per model, the mean score contrast (mean of
the min-max normalised map inside the class mask minus outside, on the dense grid, in %) of:
- `cos`: the ITSM itself, cosine of each dense feature with the class prompt's embedding;
- `dot`: the unnormalised dot product (does a norm difference between object and background
  decide the sign?);
- `specific`: cosine with the class-specific part of the text, the prompt's embedding minus the
  mean of all class prompts (the direction that tells the classes apart; CLIP Surgery, Li et al.
  2023, arXiv 2304.05653, removes the shared part for the same reason);
- `shared`: cosine with the shared part alone, the mean of all class prompts;
- `captions`: cosine with the mean embedding of 500 training captions (scenes of the training
  seed 1001), the direction the contrastive loss actually saw;
and the ratio of the mean feature norm inside the object to outside. A grid cell counts as
object when the mask covers at least 30% of it.

    python bench/shift_anatomy.py --model synth-vit --model synth-rn --seed 4242 --n 300
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F


def contrast(values: torch.Tensor, inside: torch.Tensor) -> float:
    """Min-max normalised (N,) values: mean inside minus mean outside."""
    values = (values - values.min()) / (values.max() - values.min()).clamp_min(1e-8)
    return float(values[inside].mean() - values[~inside].mean())


@torch.no_grad()
def anatomy(name: str, seed: int, n: int, template: str = "single", device: str = "cpu") -> dict[str, float]:
    from eclip.data.synthetic import CLASSNAMES, batch_of_scenes
    from eclip.models.loading import load_model
    from eclip.prompts import encode_prompts
    from eclip.shift import synthetic_samples

    model = load_model(name, device=device)
    text = encode_prompts(model, list(CLASSNAMES), template).float().cpu()
    shared = F.normalize(text.mean(dim=0), dim=-1)
    captions = F.normalize(model.encode_text(batch_of_scenes(1001, 0, 500)[1]).float().mean(dim=0), dim=-1).cpu()
    sums: dict[str, float] = {"cos": 0.0, "dot": 0.0, "specific": 0.0, "shared": 0.0, "captions": 0.0, "norm_ratio": 0.0}
    pairs = 0
    for sample in synthetic_samples(seed, n):
        x = model.preprocess([sample.image])
        dense = model.dense(x)[0].float().cpu()
        h, w, _ = dense.shape
        dense = dense.reshape(h * w, -1)
        unit = F.normalize(dense, dim=-1)
        norms = dense.norm(dim=-1)
        for cls, mask in sample.masks.items():
            cover = F.adaptive_avg_pool2d(torch.from_numpy(mask).float()[None, None], (h, w)).flatten()
            inside = cover >= 0.3
            if inside.all() or not inside.any():
                continue
            t = text[CLASSNAMES.index(cls)].float()
            sums["cos"] += contrast(unit @ t, inside)
            sums["dot"] += contrast(dense @ t, inside)
            sums["specific"] += contrast(unit @ F.normalize(t - text.mean(dim=0), dim=-1), inside)
            sums["shared"] += contrast(unit @ shared, inside)
            sums["captions"] += contrast(unit @ captions, inside)
            sums["norm_ratio"] += float(norms[inside].mean() / norms[~inside].mean())
            pairs += 1
    out = {k: (100 * v if k != "norm_ratio" else v) / max(1, pairs) for k, v in sums.items()}
    return {"model": name, "pairs": pairs, **{k: round(v, 3) for k, v in out.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--template", default="single", help="Prompt template set or a template with {} (eclip.prompts).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [anatomy(name, args.seed, args.n, args.template, args.device) for name in args.model]
    print("| model | pairs | cos (ITSM) | dot | specific | shared | captions | norm in / out |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['model']}` | {r['pairs']} | {r['cos']:+.1f} | {r['dot']:+.1f} | {r['specific']:+.1f} | {r['shared']:+.1f} | "
              f"{r['captions']:+.1f} | {r['norm_ratio']:.2f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
