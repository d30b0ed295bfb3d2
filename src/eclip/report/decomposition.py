"""Figure of a text-based decomposition: per text, the layer x head contributions and where they come from."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from eclip.report.overlay import save_png  # noqa: E402


def decomposition_figure(image: Image.Image, result, texts: Sequence[str], out: Path) -> Path:
    """Write a PNG (atomically) with one row per text: the (layer x [MLP, heads]) contributions to the
    cosine on a diverging scale, and the per-location contributions over the image
    (`eclip.methods.decomposition.ScoreDecomposition`; `texts` name its K texts)."""
    k = len(texts)
    n_layers, n_heads = result.heads.shape[:2]
    fig, axes = plt.subplots(k, 2, figsize=(3.0 + 0.45 * (n_heads + 1), 2.6 * k), squeeze=False,
                             gridspec_kw={"width_ratios": [max(2, n_heads + 1), 3]}, layout="constrained")
    rgb = np.asarray(image.convert("RGB"))
    for i, (row, text) in enumerate(zip(axes, texts)):
        table = np.concatenate([result.mlps[:, i : i + 1], result.heads[:, :, i]], axis=1)  # (L, 1 + H)
        bound = float(np.abs(table).max()) or 1.0
        im = row[0].imshow(table, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        row[0].set_xticks(range(n_heads + 1), ["MLP"] + [f"h{h}" for h in range(n_heads)], fontsize=7)
        row[0].set_yticks(range(n_layers), [f"layer {layer}" for layer in range(n_layers)], fontsize=7)
        row[0].set_title(f"{text}: cos {result.cosine[i]:+.3f} (embedding {result.embed[i]:+.3f})", fontsize=8)
        fig.colorbar(im, ax=row[0], shrink=0.8)
        spatial = np.asarray(Image.fromarray(result.spatial[i].astype(np.float32)).resize(image.size, Image.BILINEAR))
        bound = float(np.abs(spatial).max()) or 1.0
        row[1].imshow(rgb)
        row[1].imshow(spatial, cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=0.6)
        row[1].set_title("per location (all heads)", fontsize=8)
        row[1].axis("off")
    return save_png(fig, out)
