"""Imports every built-in method module so that each registers itself; the order is the listing order."""
from eclip.methods import itsm  # noqa: F401
