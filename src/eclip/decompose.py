"""The image-text cosine split into direct contributions: the library side of `eclip decompose`.

Text-based decomposition (Gandelsman, Efros, Steinhardt 2024, arXiv 2310.05916; see
`eclip.methods.decomposition`): for each image and K texts, how much the embedded tokens, each
layer's MLP and each layer's attention heads contribute to the cosine. The terms come with the
`decomposition` method's maps (`Maps.extra["decomposition"]`); here they become tables whose
rows add up to the cosine itself.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from eclip.methods.decomposition import ScoreDecomposition

if TYPE_CHECKING:  # pragma: no cover
    from eclip.explain import Failure


def write_tables(result: ScoreDecomposition, texts: Sequence[str], stem: Path) -> tuple[Path, Path]:
    """STEM.csv (one row per text and term) and STEM.md (per text: a layer x (MLP, heads) table), each written atomically."""
    from eclip.writing import atomic_write_text

    stem.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=["text", "layer", "term", "head", "contribution"])
    writer.writeheader()
    writer.writerows(result.rows(list(texts)))
    lines = []
    n_layers, n_heads = result.heads.shape[:2]
    for k, text in enumerate(texts):
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
    csv_path = atomic_write_text(stem.parent / f"{stem.name}.csv", buffer.getvalue())
    md_path = atomic_write_text(stem.parent / f"{stem.name}.md", "\n".join(lines))
    return csv_path, md_path


def decompose_files(model, paths: Sequence[Path], text_features: torch.Tensor, texts: Sequence[str], out: Path, *,
                    batch_size: int = 4, size: int | None = None) -> Iterator[Path | Failure]:
    """Decompose each image's cosines with the texts and write OUT/<stem>_decomposition.{csv,md,png}.

    Yields, per path, the written stem or the `eclip.explain.Failure` of a file that could not be
    decoded. The images stream in batches through `eclip.explain.explain_files` with the
    `decomposition` method, whose terms each image's tables hold.
    """
    from eclip.explain import Failure, explain_files, unique_stems
    from eclip.methods.base import get_method
    from eclip.report.decomposition import decomposition_figure
    from eclip.writing import check_output_folder

    check_output_folder(out)
    names = unique_stems(list(paths))
    for result in explain_files(model, get_method("decomposition"), paths, text_features, texts, batch_size=batch_size, size=size):
        if isinstance(result, Failure):
            yield result
            continue
        terms = result.extra["decomposition"]
        stem = Path(out) / f"{names[result.path]}_decomposition"
        write_tables(terms, texts, stem)
        decomposition_figure(result.display, terms, texts, stem.parent / f"{stem.name}.png")
        yield stem
