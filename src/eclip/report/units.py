"""The key numbers' names and units: what every table, figure, page and printout calls them.

One convention, stated once (the README's "Units"): records on disk (OUT.json, OUT.csv,
shift.json) keep the metrics' own keys and units, `msc` in percent and `inverted_rate`,
`pointing_game` and `zero_shot` as fractions in [0, 1]; whatever a person reads shows the
percentages under one label each: "mSC %" (mean score contrast), "inverted %", "pointing %",
"zero-shot %". One (image, class) pair's score contrast, the term mSC averages, is "SC %": 100 x
(mean of the min-max normalised map inside the class mask - mean outside), negative when the map
prefers the background (the "opposite visualization" of ECLIP: Li, Wang, Duan, Li 2022, arXiv
2209.07046). `ScoreContrast.per_pair` gives it as a fraction; `format_sc` shows it.

Imports nothing heavy: the web demo's table and captions use it too.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shown:
    """How one record key is shown: its label, the factor from the record's unit to the shown one, digits, a sign."""

    label: str
    scale: float = 1.0
    digits: int = 3
    signed: bool = False


#: Record key -> how it is shown, in the order tables and figures show them.
SHOWN = {
    "threshold": Shown("threshold", digits=2),
    "fg_iou": Shown("fg IoU"),
    "miou": Shown("mIoU"),
    "msc": Shown("mSC %", digits=1, signed=True),
    "inverted_rate": Shown("inverted %", 100.0, 1),
    "pointing_game": Shown("pointing %", 100.0, 1),
    "deletion_auc": Shown("deletion AUC"),
    "insertion_auc": Shown("insertion AUC"),
    "zero_shot": Shown("zero-shot %", 100.0, 1),
}

#: Segmentation records (`eclip evaluate --task segmentation`) -> how they are shown: shares in percent, as
#: the segmentation papers report them (their `miou` is the argmax mIoU over all classes, not the binary one).
SEGMENTATION_SHOWN = {
    "miou": Shown("mIoU %", 100.0, 1),
    "pixel_accuracy": Shown("pixel acc %", 100.0, 1),
    "mean_accuracy": Shown("mean acc %", 100.0, 1),
}

#: The label of one (image, class) pair's score contrast, in percent.
SC_LABEL = "SC %"

#: What "SC" and "mSC" are, in one sentence for legends, pages and help texts.
SC_DEFINITION = ("SC: score contrast of one (image, class) pair, 100 x (mean of the map inside the class mask - mean outside), "
                 "in percent; below 0 the map prefers the background. mSC: its mean over the pairs")


#: What SC is, short enough for a figure's title.
SC_CAPTION = "SC: mean of the map inside the outline minus outside, in %"


def label(key: str) -> str:
    """The label of a record key ('mSC %', 'inverted %', ...); the key itself when it has none."""
    return SHOWN[key].label if key in SHOWN else key


def shown_value(key: str, value: float | None) -> float | None:
    """`value` of record key `key` in the unit its label names (a fraction becomes a percentage)."""
    if value is None:
        return None
    return float(value) * (SHOWN[key].scale if key in SHOWN else 1.0)


def format_value(key: str, value, table: dict[str, Shown] = SHOWN) -> str:
    """`value` of record key `key` as tables show it: '+4.6' for mSC %, '30.0' for inverted %, '0.141' for fg IoU, '–' for none
    (`table`: SEGMENTATION_SHOWN for segmentation records)."""
    if value is None:
        return "–"
    if not isinstance(value, (int, float)) or isinstance(value, bool) or key not in table:
        return str(value)
    shown = table[key]
    return f"{float(value) * shown.scale:{'+' if shown.signed else ''}.{shown.digits}f}"


def sc_percent(contrast: float | None) -> float | None:
    """One pair's score contrast (a fraction, as `ScoreContrast.per_pair` gives it) in percent; None or NaN stays None."""
    if contrast is None or contrast != contrast:
        return None
    return 100.0 * float(contrast)


def format_sc(contrast: float | None) -> str:
    """One pair's score contrast (a fraction) as figures and pages caption it: 'SC +24.0%' ('SC –' without one)."""
    percent = sc_percent(contrast)
    return "SC –" if percent is None else f"SC {percent:+.1f}%"
