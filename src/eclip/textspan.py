"""TextSpan: a few texts that span what each attention head writes (Gandelsman, Efros, Steinhardt 2024, arXiv 2310.05916).

Each head of the last layers adds a direct contribution to the image embedding (see
`eclip.methods.decomposition`). Over many images these contributions vary inside a
low-dimensional space; TextSpan names it with texts from a pool, greedily, as the authors'
`compute_complete_text_set.py` does: project the pool's text embeddings onto the span of the
head's top `rank` right singular vectors; then, `n_texts` times, pick the text along which the
(mean-centred) head outputs vary most, and remove that text's direction from the outputs and from
every other text. We also report, after each pick, the share of the head's variance the picked
texts explain (1 - remaining / initial squared deviation), so a head whose outputs the pool
cannot describe shows it.

The pool is the dataset's class names in every template of a set (CLIP's 80 ImageNet templates by
default), or one text per line from a file. Defaults: the last 4 layers (the authors' README
commands), 5 texts per head (they use 10 to 20 with a pool of 3498 texts; ours are smaller),
rank 80 capped by the embedding size and the number of images.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from eclip.errors import OptionError, TextInputError

logger = logging.getLogger(__name__)


@dataclass
class HeadSpan:
    """The texts TextSpan picked for one head, in order, with the variance share explained after each pick."""

    layer: int
    head: int
    texts: list[str]
    explained: list[float]

    def to_json(self) -> dict:
        return asdict(self)


def text_span(outputs: torch.Tensor, text_features: torch.Tensor, n_texts: int = 5, rank: int = 80) -> tuple[list[int], list[float]]:
    """(n, D) one head's outputs over n images, (P, D) pool embeddings -> picked text indices, explained shares."""
    data = outputs.double()
    rank = max(1, min(rank, *data.shape))
    _, _, vh = torch.linalg.svd(data, full_matrices=False)
    basis = vh[:rank]
    texts = text_features.double() @ basis.T @ basis  # the pool, projected onto the head's output span
    data = data - data.mean(dim=0, keepdim=True)
    initial = data.pow(2).sum().clamp_min(1e-30)
    chosen, explained = [], []
    for _ in range(min(n_texts, len(texts))):
        top = int((data @ texts.T).std(dim=0).argmax())
        direction = texts[top]
        length = (direction @ direction).clamp_min(1e-30)
        data = data - (data @ direction / length)[:, None] * direction[None]
        texts = texts - (texts @ direction / length)[:, None] * direction[None]
        chosen.append(top)
        explained.append(float(1.0 - data.pow(2).sum() / initial))
    return chosen, explained


def dataset_classnames(dataset: str) -> list[str]:
    """The class names of a dataset by name (no folder needed): the synthetic shapes, or VOC / COCO / Context's."""
    from eclip.data.registry import _ALIASES, DATASETS, read_classnames
    from eclip.errors import DatasetError

    key = _ALIASES.get(dataset.strip().lower(), dataset.strip().lower())
    if key == "synthetic":
        from eclip.data.synthetic import CLASSNAMES

        return list(CLASSNAMES)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return read_classnames(key)


def text_pool(dataset: str = "synthetic", templates: str | Sequence[str] = "imagenet", pool_file: Path | None = None) -> list[str]:
    """The TextSpan pool: one text per line of `pool_file`, or every class name of `dataset` in every template."""
    from eclip.prompts import resolve_templates

    if pool_file is not None:
        try:
            lines = Path(pool_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise TextInputError(f"{pool_file}: cannot read the text pool ({err}); give a UTF-8 file with one text per line") from err
        pool = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
        if not pool:
            raise TextInputError(f"{pool_file}: the text pool is empty; give one text per line")
        return pool
    return list(dict.fromkeys(t.format(name) for name in dataset_classnames(dataset) for t in resolve_templates(templates)))


def spans_table(spans: Sequence[HeadSpan]) -> str:
    """The spans as a Markdown table: layer, head, the texts in the order picked, the variance they explain."""
    lines = ["| layer | head | texts (in the order picked) | variance explained |", "|---:|---:|---|---:|"]
    lines += [f"| {s.layer} | {s.head} | {'; '.join(s.texts)} | {s.explained[-1]:.2f} |" for s in spans]
    return "\n".join(lines)


@dataclass
class TextSpanRun:
    """What `textspan_files` did: the spans, the JSON record it wrote, and the files it could not decode
    (`eclip.explain.Failure`)."""

    spans: list[HeadSpan]
    record: dict
    failures: list


def textspan_files(model, paths: Sequence[Path], pool: Sequence[str], out: Path, *, layers: int = 4, n_texts: int = 5,
                   rank: int = 80, batch_size: int = 16) -> TextSpanRun:
    """TextSpan of the heads over the images of `paths`; writes OUT/textspan.json (the model, the number
    of images, the pool size, the rank and the heads' spans) and OUT/textspan.md, atomically.

    The images stream in batches (`eclip.explain.prepared_batches`); a file that cannot be decoded
    is left out and reported in the result.
    """
    import json

    from eclip.explain import Failure, prepared_batches
    from eclip.writing import atomic_write_text, check_output_folder

    check_output_folder(out)
    check_layers(model, layers)
    failures = []

    def batches():
        for batch in prepared_batches(model, paths, batch_size=batch_size):
            if isinstance(batch, Failure):
                failures.append(batch)
            else:
                yield torch.stack([p.tensor for p in batch])

    spans = head_spans(model, batches(), pool, layers=layers, n_texts=n_texts, rank=rank)
    record = {"model": model.name, "images": len(paths) - len(failures), "pool": len(pool), "rank": rank,
              "heads": [s.to_json() for s in spans]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "textspan.json", json.dumps(record, indent=2))
    atomic_write_text(out / "textspan.md", spans_table(spans) + "\n")
    return TextSpanRun(spans, record, failures)


def check_layers(model, layers: int) -> None:
    """`layers` counts the last layers of `model`: from 1 to its depth (`OptionError` otherwise, before any work)."""
    if not 1 <= layers <= model.num_layers:
        raise OptionError(f"layers={layers}: {model.name} has {model.num_layers} layers; study 1 to {model.num_layers} of them")


def head_spans(model, batches: Iterable[torch.Tensor], pool: Sequence[str], layers: int = 4, n_texts: int = 5,
               rank: int = 80, text_batch: int = 256) -> list[HeadSpan]:
    """TextSpan for every head of the last `layers` layers, from the images of `batches` ((B, 3, H, W) each)."""
    from eclip.methods.decomposition import decompose

    check_layers(model, layers)
    outputs = []
    with torch.no_grad():
        for images in batches:
            heads = decompose(model, images).heads  # (B, L, T, H, D)
            outputs.append(heads[:, -layers:].sum(dim=2).cpu())  # (B, layers, H, D)
        features = torch.cat([model.encode_text(list(pool[i : i + text_batch]), cache=False).cpu()
                              for i in range(0, len(pool), text_batch)])
    if not outputs:
        raise TextInputError("TextSpan needs at least one image")
    stacked = torch.cat(outputs)  # (n, layers, H, D)
    n, depth, n_heads = stacked.shape[:3]
    if n < 2:
        logger.warning("TextSpan with %d image: the outputs do not vary; give a folder of images", n)
    first = model.num_layers - depth
    spans = []
    for layer in range(depth):
        for head in range(n_heads):
            chosen, explained = text_span(stacked[:, layer, head], features, n_texts, rank)
            spans.append(HeadSpan(first + layer, head, [pool[i] for i in chosen], [round(e, 4) for e in explained]))
    return spans
