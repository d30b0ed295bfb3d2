"""Typed errors of eclip.

Every message names the offending file or value *and* the fix, in one line, so the CLI can
print it as is and exit non-zero.
"""
from __future__ import annotations


class EclipError(Exception):
    """Base class: any error eclip raises on purpose."""


class ModelLoadError(EclipError):
    """An unknown model name, a missing or corrupt checkpoint, a config that does not fit."""


class InputError(EclipError):
    """An input file or folder that does not exist."""


class ImageLoadError(EclipError):
    """An image file that cannot be read or decoded."""


class TextInputError(EclipError):
    """An empty text, or one longer than the model's context."""


class DatasetError(EclipError):
    """A dataset folder that does not have the expected layout."""


class CheckpointError(EclipError):
    """A training checkpoint that cannot be written or resumed."""


class MethodError(EclipError):
    """An unknown method or method option, or a method that does not support the given model."""


class EvaluationError(EclipError):
    """An evaluation that cannot run as asked (bad option, maps folder missing, resume file that does not fit)."""


class OptionError(EclipError, ValueError):
    """An option value that makes no sense (out of its range, a template without {}, a run that differs)."""


class RecipeError(OptionError):
    """A training option (a field of a fine-tune recipe, `eclip.train.recipe`) that makes no sense.

    The message names the field in backticks (`settings.steps`, `pooling.mask_mass`), never a
    command-line flag: the CLI puts its own flag in the field's place.
    """


class OutputError(EclipError):
    """An output path that cannot be written (an existing file, a path under a file, a read-only place)."""


class DeviceError(EclipError):
    """A device name torch does not know, or a device this machine does not have."""
