"""Imports every built-in method module so that each registers itself; the order is the listing order."""
# ruff: noqa: F401, I001  (the import order is the listing order, not alphabetical)
from eclip.methods import itsm
from eclip.methods import itsm_specific
from eclip.methods import free_attention
from eclip.methods import gradcam
from eclip.methods import chefer
from eclip.methods import rollout
from eclip.methods import rise
from eclip.methods import maskclip
from eclip.methods import surgery
from eclip.methods import sclip
from eclip.methods import clearclip
from eclip.methods import naclip
from eclip.methods import gem
from eclip.methods import grad_eclip
from eclip.methods import legrad
from eclip.methods import decomposition
from eclip.methods import interactions
from eclip.methods import phrase
from eclip.methods import cliptrase
