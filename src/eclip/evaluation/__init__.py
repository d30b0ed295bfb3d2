"""Evaluate explanation maps against ground-truth masks: the library side of `eclip evaluate`.

    from eclip.evaluation import EvalConfig, evaluate, write_results
    records = evaluate(EvalConfig("synthetic", "data/synth", models=["synth-vit"], methods=["itsm", "gradcam"]))
    write_results(records, "results.json")

Protocol (ECLIP, Li, Wang, Duan, Li 2022, arXiv 2209.07046): every class present in an image is
explained on its own with the prompts of all the dataset's classes as the text set; maps are
min-max normalised and resized to the image (`eclip.evaluation.maps`, the one path to the class
maps); metrics are in `eclip.metrics`, fed together by `eclip.evaluation.suite.MetricSuite`.
"""
from eclip.errors import EvaluationError
from eclip.evaluation.config import DEFAULT_TEMPLATES, EvalConfig
from eclip.evaluation.output import read_results, write_results
from eclip.evaluation.partial import partial_path
from eclip.evaluation.runner import Evaluation, evaluate

__all__ = ["DEFAULT_TEMPLATES", "EvalConfig", "Evaluation", "EvaluationError", "evaluate", "partial_path", "read_results",
           "write_results"]
