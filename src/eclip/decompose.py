"""The image-text cosine split into direct contributions: the library side of `eclip decompose`.

Text-based decomposition (Gandelsman, Efros, Steinhardt 2024, arXiv 2310.05916; see
`eclip.methods.decomposition`): for one image and K texts, how much the embedded tokens, each
layer's MLP and each layer's attention heads contribute to the cosine. The contributions add up
to the cosine itself (the `total` column checks it).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ScoreDecomposition:
    """One image's cosines with K texts, split: embed (K,), mlps (L, K), heads (L, H, K), spatial (K, h, w).

    `spatial` is each location's contribution over all layers and heads (not centred over texts).
    """

    texts: list[str]
    cosine: np.ndarray
    embed: np.ndarray
    mlps: np.ndarray
    heads: np.ndarray
    spatial: np.ndarray

    def rows(self) -> list[dict]:
        """One row per (text, term): the embedding, each layer's MLP and each (layer, head)."""
        out = []
        for k, text in enumerate(self.texts):
            out.append({"text": text, "layer": "", "term": "embedding", "head": "", "contribution": float(self.embed[k])})
            for layer in range(self.mlps.shape[0]):
                out.append({"text": text, "layer": layer, "term": "mlp", "head": "", "contribution": float(self.mlps[layer, k])})
                for head in range(self.heads.shape[1]):
                    out.append({"text": text, "layer": layer, "term": "attention", "head": head,
                                "contribution": float(self.heads[layer, head, k])})
        return out


def decompose_scores(model, images: torch.Tensor, text_features: torch.Tensor, texts: list[str]) -> list[ScoreDecomposition]:
    """(B, 3, H, W) images, (K, D) normalised texts -> one `ScoreDecomposition` per image."""
    from eclip.methods.decomposition import decompose

    parts = decompose(model, images)
    scores = parts.layer_scores(text_features)
    spatial = parts.spatial(text_features)
    cosine = F.normalize(parts.total, dim=-1) @ text_features.to(parts.total).T
    return [ScoreDecomposition(list(texts), cosine[b].cpu().numpy(), scores["embed"][b].cpu().numpy(),
                               scores["mlps"][b].cpu().numpy(), scores["heads"][b].cpu().numpy(), spatial[b].cpu().numpy())
            for b in range(len(images))]


def write_tables(result: ScoreDecomposition, stem: Path) -> tuple[Path, Path]:
    """STEM.csv (one row per text and term) and STEM.md (per text: a layer x (MLP, heads) table)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "layer", "term", "head", "contribution"])
        writer.writeheader()
        writer.writerows(result.rows())
    lines = []
    n_layers, n_heads = result.heads.shape[:2]
    for k, text in enumerate(result.texts):
        total = result.embed[k] + result.mlps[:, k].sum() + result.heads[..., k].sum()
        lines += [f"### {text}", "", f"cosine {result.cosine[k]:+.4f} = embedding {result.embed[k]:+.4f} + MLPs "
                  f"{result.mlps[:, k].sum():+.4f} + attention {result.heads[..., k].sum():+.4f} (sum {total:+.4f})", ""]
        header = ["layer", "MLP", "attention"] + [f"head {h}" for h in range(n_heads)]
        lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
        for layer in range(n_layers):
            cells = [str(layer), f"{result.mlps[layer, k]:+.4f}", f"{result.heads[layer, :, k].sum():+.4f}"]
            cells += [f"{result.heads[layer, h, k]:+.4f}" for h in range(n_heads)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    md_path.write_text("\n".join(lines))
    return csv_path, md_path
