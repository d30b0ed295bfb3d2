"""CLIP models seen through the DenseCLIP protocol, and how to load them by name or path."""
from eclip.models.adapter import DenseCLIP
from eclip.models.loading import load_model

__all__ = ["DenseCLIP", "load_model"]
