"""Imports every built-in method module so that each registers itself; the order is the listing order."""
from eclip.methods import itsm  # noqa: F401

from eclip.methods import free_attention  # noqa: F401  # isort: skip (listing order)
