"""Evaluate explanation maps against ground-truth masks: the library side of `eclip evaluate`.

    from eclip.evaluation import EvalConfig, evaluate, write_results
    records = evaluate(EvalConfig("synthetic", "data/synth", models=["synth-vit"], methods=["itsm", "gradcam"]))
    write_results(records, "results.json")

Protocol (ECLIP.md section 4): every class present in an image is explained on its own with the
prompts of all the dataset's classes as the text set; maps are resized to the image and min-max
normalised; metrics are in `eclip.metrics`.
"""
from eclip.errors import EvaluationError
from eclip.evaluation.config import DEFAULT_TEMPLATES, EvalConfig
from eclip.evaluation.output import read_results, write_results
from eclip.evaluation.partial import partial_path
from eclip.evaluation.runner import Evaluation, evaluate

__all__ = ["DEFAULT_TEMPLATES", "EvalConfig", "Evaluation", "EvaluationError", "evaluate", "partial_path", "read_results",
           "write_results"]
