"""Contrastive training and fine-tuning of CLIPs (vanilla pooling or ECLIP's masked max pooling).

    from eclip.train import FinetuneRecipe, finetune
    finetune("synth-vit", FinetuneRecipe(), "synthetic", "runs/my-eclip")

A fine-tune is described by one frozen `FinetuneRecipe` (`eclip.train.recipe`); `build_run` turns
it into what the loop (`eclip.train.loop.train`) trains.
"""
from eclip.models.pooling import PoolingConfig
from eclip.train.loop import TrainResult, TrainSettings
from eclip.train.losses import LossTerms
from eclip.train.recipe import DataRecipe, FinetuneRecipe, Start, build_run, finetune, read_recipe, recipe_of

__all__ = ["DataRecipe", "FinetuneRecipe", "LossTerms", "PoolingConfig", "Start", "TrainResult", "TrainSettings", "build_run",
           "finetune", "read_recipe", "recipe_of"]
