"""eclip: where CLIP looks when it matches an image with a text, and how to fix it (ECLIP)."""
from __future__ import annotations

__version__ = "0.1.0"
