"""The README's demo command, run as the Makefile runs it, on the bundled models and samples."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.bundled import samples_root
from eclip.data.synthetic import SyntheticDataset
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
    panels = set(report["msc"])
    expected = {f"{name} ITSM" for name in bundled_models()} | {"synth-vit free attn", "synth-rn free attn"}
    assert panels == expected and report["unit"] == "percent"
    assert all(-100 <= value <= 100 for value in report["msc"].values())
    assert "mSC % over " in result.output and "contrast" not in result.output


def test_the_msc_is_the_mean_of_the_figures_contrasts_and_n_takes_the_first_images(tmp_path):
    """The printed mSC % come from the metric suite; the figures' SC % from the same maps, pair by pair."""
    from eclip.demo import run_demo

    result = run_demo(tmp_path / "demo", models=["synth-vit"], batch_size=3, progress=False, n=4)
    values: dict[str, list[float]] = {}
    for by_class in result.per_image.values():
        for by_panel in by_class.values():
            for title, value in by_panel.items():
                values.setdefault(title, []).append(value)
    ids = [record["id"] for record in SyntheticDataset(samples_root()).records]
    assert list(result.per_image) == ids[:4] and [f.stem for f in result.figures] == ids[:4]
    assert result.msc.keys() == values.keys()
    for title, contrasts in values.items():
        assert result.msc[title] == pytest.approx(float(np.mean(contrasts)), rel=1e-9, abs=1e-9)
    assert json.loads((tmp_path / "demo" / "contrasts.json").read_text())["per_image"] == result.per_image


def test_demo_n_must_be_positive(tmp_path):
    result = CliRunner().invoke(cli.app, ["demo", "--n", "0", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2 and "--n" in result.output and not (tmp_path / "demo").exists()
