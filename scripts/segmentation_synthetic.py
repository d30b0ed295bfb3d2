"""The offline segmentation benchmark: every method on every bundled model, on held-out synthetic scenes.

Two vocabularies over the same scenes (`eclip synth`, test seed 777): the 8 shapes plus
"background" (does the map of "heart" light up the heart and the map of "square" the square?),
and the 64 colour x shape phrases plus "background" of `--task phrases` (does "a red star" win
over "a blue star" on the red star?). Every pixel takes the class whose raw map is highest
(`eclip evaluate --task segmentation`: each method's own post-processing, the scene at the model's
input size); the scores are mIoU, pixel accuracy and mean class accuracy over all the scenes.

    nice python scripts/segmentation_synthetic.py --n 50 -o bench/results/segmentation-synthetic.json

prints a Markdown table (mIoU, %) and writes one JSON record per (model, method, vocabulary).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from eclip.data.phrases import SyntheticPhrases
from eclip.data.synthetic import TEST_SEED, SyntheticEval, write_dataset
from eclip.evaluation import EvalConfig
from eclip.evaluation.runner import Evaluation
from eclip.methods.base import available_methods
from eclip.models.loading import bundled_models


def vocabulary_records(n: int, seed: int, models: list[str], methods: list[str], device: str = "cpu") -> Iterator[dict]:
    """The records of `eclip evaluate --task segmentation` on `n` scenes of `seed`, once per vocabulary (its name in
    each record's "vocabulary"), as each is made."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "scenes", n, seed=seed)
        config = EvalConfig("synthetic", root, models=models, methods=methods, task="segmentation", device=device)
        for vocab_name, dataset in {"shapes": SyntheticEval(root), "phrases": SyntheticPhrases(root)}.items():
            for record in Evaluation(config, progress=False, dataset=dataset).run():
                yield {**record, "vocabulary": vocab_name, "seed": seed}


def run(n: int, seed: int, models: list[str], methods: list[str]) -> list[dict]:
    """`vocabulary_records`, each printed as it comes, then each vocabulary's evaluation time (its records' seconds)."""
    records = []
    for record in vocabulary_records(n, seed, models, methods):
        records.append(record)
        shown = "-" if record["miou"] is None else f"{100 * record['miou']:.1f}"
        print(f"{record['model']} {record['method']} {record['vocabulary']}: mIoU {shown}", flush=True)
    for vocab_name in dict.fromkeys(r["vocabulary"] for r in records):
        print(f"{vocab_name}: {sum(r['seconds'] for r in records if r['vocabulary'] == vocab_name):.0f} s", flush=True)
    return records


def table(records: list[dict], models: list[str], methods: list[str]) -> str:
    """Markdown: one row per method, one column per model, "shapes / phrases" mIoU in %."""
    cell = {}
    for r in records:
        if r.get("error"):
            cell[(r["method"], r["model"])] = "n/a"
        else:
            cell.setdefault((r["method"], r["model"]), {})[r["vocabulary"]] = f"{100 * r['miou']:.1f}"
    lines = ["| method | " + " | ".join(models) + " |", "| --- |" + " --- |" * len(models)]
    for method in methods:
        row = []
        for model in models:
            c = cell.get((method, model), "")
            row.append(c if isinstance(c, str) else f"{c.get('shapes', '')} / {c.get('phrases', '')}")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="scenes (default 50)")
    parser.add_argument("--seed", type=int, default=TEST_SEED, help=f"scene seed (default the test seed {TEST_SEED})")
    parser.add_argument("--model", action="append", help="bundled model (repeat; default all)")
    parser.add_argument("--method", action="append", help="method, or method:key=value,... (repeat; default all)")
    parser.add_argument("-o", "--out", type=Path, help="JSON records")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = args.model or list(bundled_models())
    methods = args.method or list(available_methods())
    records = run(args.n, args.seed, models, methods)
    if args.out:
        from eclip.writing import atomic_write_text

        atomic_write_text(args.out, json.dumps(records, indent=1))
    print(table(records, models, methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
