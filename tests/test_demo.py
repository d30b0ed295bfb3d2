"""The README's demo command, run as the Makefile runs it, on the bundled models and samples."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.bundled import samples_root
from eclip.data.synthetic import SyntheticDataset
from eclip.demo import mean_contrasts
from eclip.metrics.semantic_shift import ScoreContrast
from eclip.models.loading import bundled_models

ROOT = Path(__file__).resolve().parents[1]


def makefile_demo_arguments() -> list[str]:
    """The arguments of `eclip` in the Makefile's demo recipe (the README's first command)."""
    first_command = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("make "))
    assert first_command.startswith("make demo")
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    words = shlex.split(recipe)
    return words[words.index("$(VENV)/bin/eclip") + 1:]


def test_the_demo_command_writes_a_figure_per_sample_with_vanilla_eclip_and_free_attention(tmp_path):
    arguments = makefile_demo_arguments()
    arguments[arguments.index("--out") + 1] = str(tmp_path / "demo")
    result = CliRunner().invoke(cli.app, arguments)
    assert result.exit_code == 0, result.output
    ids = [record["id"] for record in SyntheticDataset(samples_root()).records]
    assert len(ids) >= 4
    for image_id in ids:
        assert (tmp_path / "demo" / f"{image_id}.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "demo" / "contrasts.json").read_text())
    panels = set(report["mean"])
    expected = {f"{name} ITSM" for name in bundled_models()} | {"synth-vit free attn", "synth-rn free attn"}
    assert panels == expected
    assert all(-1 <= value <= 1 for value in report["mean"].values())


def test_score_contrast_and_its_mean():
    heat = np.zeros((4, 4))
    heat[:2] = 1.0
    mask = np.zeros((4, 4), dtype=bool)
    mask[:2] = True
    assert ScoreContrast.contrasts(heat[None], mask[None]).tolist() == [1.0]
    assert ScoreContrast.contrasts(1 - heat[None], mask[None]).tolist() == [-1.0]
    per_image = [{"star": {"a": 1.0, "b": -0.5}}, {"ring": {"a": 0.0, "b": 0.5}, "heart": {"a": 0.5, "b": 0.0}}]
    assert mean_contrasts(per_image) == {"a": 0.5, "b": 0.0}
