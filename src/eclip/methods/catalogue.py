"""The built-in methods, in the order `eclip methods` and the web demo list them.

Importing this module registers every built-in method (each module's `@register`); the listing
order is `ORDER`, not the order of the imports. ECLIP's own map first, then the training-free
baselines by family, then the related work.
"""
# ruff: noqa: F401  (imported for their registration)
from eclip.methods import (
    chefer,
    clearclip,
    cliptrase,
    decomposition,
    free_attention,
    gem,
    grad_eclip,
    gradcam,
    interactions,
    itsm,
    itsm_specific,
    legrad,
    maskclip,
    naclip,
    phrase,
    rise,
    rollout,
    sclip,
    surgery,
)

ORDER = (
    "itsm", "itsm_specific", "free_attention",
    "gradcam", "chefer", "rollout", "rise",
    "maskclip", "surgery", "sclip", "clearclip", "naclip", "gem",
    "grad_eclip", "legrad",
    "decomposition", "interactions", "phrase", "cliptrase",
)
