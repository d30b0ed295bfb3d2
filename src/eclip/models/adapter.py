"""The DenseCLIP protocol: the only door through which methods reach a CLIP model.

Every explanation method needs the same few things from a CLIP: text embeddings, the model's own
pooled image embedding (its real logit), per-location image features in the joint space (the
ITSM of Li et al. 2022, arXiv 2209.07046), and for attention-based methods the blocks' q, k, v
and attention probabilities. Adapters provide them for open_clip ViTs and ResNets and for Hugging
Face CLIPModel, computing everything from the wrapped model's own weights without ever editing
the model: the user's model stays usable and its outputs unchanged.
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from eclip.errors import TextInputError

if TYPE_CHECKING:  # pragma: no cover
    from eclip.models.pooling import PoolingConfig

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


class DenseCLIP(ABC):
    """A CLIP seen as a dense model: pooled and per-location embeddings in one joint space.

    Attributes:
        arch: "vit" or "resnet"; methods declare which they support.
        name: how the model was named when loaded (for reports).
        image_size: (H, W) the model was trained at; any other size works too.
        mean, std: the model's own input normalisation.
        pooling: the pooling head (`eclip.models.pooling`); None is the model's own pooling.
            An ECLIP head (avg / max / masked_max) makes `encode_image` and the pooled output of
            `pooled_and_dense` come from the dense features, so the map and the logit agree.
    """

    arch: str = ""
    pooling: PoolingConfig | None = None
    #: Most text embeddings `encode_text` keeps, least recently used dropped first (a server sees endless new texts).
    text_cache_size: int = 4096

    def __init_subclass__(cls, **kwargs) -> None:
        """Every adapter's `pooled_and_dense` returns its pooling head's output (see `_with_head`)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("pooled_and_dense")
        if own is not None and not getattr(own, "_applies_head", False):
            cls.pooled_and_dense = _with_head(own)

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        *,
        name: str,
        image_size: tuple[int, int],
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        context_length: int = 77,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.context_length = context_length
        self._count_tokens = count_tokens
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # ----------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    @abstractmethod
    def logit_scale(self) -> float:
        """CLIP's learned temperature (already exponentiated)."""

    @property
    @abstractmethod
    def patch_size(self) -> int:
        """Pixels per dense location along each side (ViT patch size; 32 for CLIP ResNets)."""

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the dense grid for an input of (height, width) pixels."""
        return height // self.patch_size, width // self.patch_size

    # ------------------------------------------------------------ preprocessing
    def preprocess(
        self,
        images: Image.Image | Sequence[Image.Image],
        size: int | tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """PIL image(s) -> (B, 3, H, W) normalised tensor on the model's device.

        `size` None resizes to the model's own size with bicubic interpolation (as CLIP does,
        ECLIP.md section 1, but without the centre crop, so maps cover the whole image); an int
        resizes to a square; (H, W) to that size. Sizes are rounded down to a multiple of the
        patch size so every pixel belongs to a dense location.
        """
        if isinstance(images, Image.Image):
            images = [images]
        if size is None:
            size = self.image_size
        elif isinstance(size, int):
            size = (size, size)
        h = max(self.patch_size, size[0] // self.patch_size * self.patch_size)
        w = max(self.patch_size, size[1] // self.patch_size * self.patch_size)
        tensors = []
        for image in images:
            image = (image if image.mode == "RGB" else image.convert("RGB")).resize((w, h), Image.BICUBIC)
            tensors.append(TF.normalize(TF.to_tensor(image), self.mean, self.std))
        return torch.stack(tensors).to(device=self.device, dtype=self.dtype)

    # --------------------------------------------------------------- text side
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(K,) strings -> (K, context) tokens; empty and over-long texts are errors, not truncations."""
        texts = list(texts)
        if not texts:
            raise TextInputError("no text given; pass at least one text, e.g. --text 'a red star'")
        for text in texts:
            if not text or not text.strip():
                raise TextInputError("an empty text was given; every --text needs at least one word")
            if self._count_tokens is not None:
                n = self._count_tokens(text)
                if n + 2 > self.context_length:
                    raise TextInputError(
                        f"text '{text[:40]}...' has {n} tokens, more than this model's context of "
                        f"{self.context_length - 2}; shorten it"
                    )
        return self.tokenizer(texts).to(self.device)

    @abstractmethod
    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The wrapped model's own text forward (what each adapter provides; call `encode_tokens`)."""

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(K, context) tokens -> (K, D) unnormalised text embeddings, uncached and with gradient if enabled.

        For methods that run the text tower on token ids of their own or with a hooked block
        (second-order interactions); `encode_text` is the normalised, cached form of the same pass.
        """
        return self._encode_tokens(tokens)

    def encode_text(self, texts: Sequence[str], cache: bool = True) -> torch.Tensor:
        """(K,) strings -> (K, D) L2-normalised text embeddings, computed once per text while it stays in the
        cache (the `text_cache_size` most recently used texts)."""
        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        found = {t: self._text_cache[t] for t in unique if cache and t in self._text_cache}
        missing = [t for t in unique if t not in found]
        if missing:
            with torch.no_grad():
                emb = F.normalize(self._encode_tokens(self.tokenize(missing)).float(), dim=-1)
            found.update((text, vector.clone()) for text, vector in zip(missing, emb))  # a row, not a view of the batch
        if cache:
            for text in unique:
                self._text_cache[text] = found[text]
                self._text_cache.move_to_end(text)
            while len(self._text_cache) > self.text_cache_size:
                self._text_cache.popitem(last=False)
        return torch.stack([found[t] for t in texts])

    def cached_text(self, feature: torch.Tensor, tolerance: float = 1e-5) -> str | None:
        """The text whose embedding `encode_text` cached is (D,) `feature` (cosine within `tolerance`), or None.

        For methods that explain a text's tokens rather than its embedding (second-order
        interactions) when they are handed embeddings, as `eclip evaluate` hands them.
        """
        if not self._text_cache:
            return None
        texts = list(self._text_cache)
        cached = torch.stack([self._text_cache[t] for t in texts])
        cosine = cached @ F.normalize(feature.float().to(cached.device), dim=-1)
        best = int(cosine.argmax())
        return texts[best] if float(cosine[best]) >= 1.0 - tolerance else None

    # -------------------------------------------------------------- image side
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D): the model's pooled embedding, unnormalised.

        With the original pooling this is the wrapped model's own output; with an ECLIP head
        (avg / max / masked_max, Li et al. 2022) it is that head applied to `dense(images)`.
        """
        with torch.no_grad():
            if self.pooling is None or self.pooling.is_native:
                return self._native_encode_image(images)
            return self.pooled_and_dense(images)[0]

    @abstractmethod
    def _native_encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """The wrapped model's own image forward, called as the model's author meant it."""

    @abstractmethod
    def pooled_and_dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> pooled (B, D) and dense (B, h, w, D), both by one and the same path.

        The pooled output comes out of the very computation that makes the dense features
        (class token / mean-token query), so it equals `encode_image` exactly when the dense
        path is right: that is the test that catches a missing projection or norm.
        """

    def dense(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h, w, D) unnormalised per-location features in the joint space."""
        return self.pooled_and_dense(images)[1]


def _with_head(native_pass: Callable) -> Callable:
    """Wrap an adapter's own `pooled_and_dense` so that its pooled output is the pooling head's.

    Applying a head twice gives the same result (it reads only the dense features, or returns the
    native output), so a subclass that calls `super().pooled_and_dense` stays correct.
    """

    @functools.wraps(native_pass)
    def pooled_and_dense(self: DenseCLIP, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, dense = native_pass(self, images)
        if self.pooling is not None and not self.pooling.is_native:
            from eclip.models.pooling import pool

            pooled = pool(self.pooling, dense, native=pooled)
        return pooled, dense

    pooled_and_dense._applies_head = True
    return pooled_and_dense
