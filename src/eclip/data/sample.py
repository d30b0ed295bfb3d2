"""The one record every evaluation dataset yields.

Keeping a single small dataclass lets `eclip evaluate` treat VOC, COCO, Pascal Context and the
synthetic scenes alike: an image, and one boolean mask per class present in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Sample:
    """One image with the masks of the classes present in it.

    Attributes:
        image_id: the image file's stem; maps written for it are named after it.
        image: the RGB image, at its own size (W, H).
        masks: class name -> boolean mask of shape (H, W); only classes present in the image.
        ignore: boolean (H, W) of pixels no metric may count (VOC's 255 border), or None.
    """

    image_id: str
    image: Image.Image
    masks: dict[str, np.ndarray]
    ignore: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image, the shape every mask has."""
        return self.image.height, self.image.width
