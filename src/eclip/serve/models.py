"""The models a server offers: loaded once, kept, and used by one job at a time each."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from eclip.errors import MethodError, ModelLoadError
from eclip.models.adapter import DenseCLIP

log = logging.getLogger(__name__)


class ModelCache:
    """The models a server offers, each loaded once on first use and then kept.

    Offered: the bundled models and the extra (name, pretrained) pairs given at start-up, under
    their labels (name, or name:pretrained). `using` holds a per-model lock while a job runs, so
    methods that hook into a model never overlap on it; different models run in parallel. Each
    model keeps at most `text_cache` text embeddings (`DenseCLIP.text_cache_size`, least recently
    used dropped first), so a server that sees endless new texts keeps a bounded cache. Every job
    makes its maps in `precision` (`eclip serve --precision`).
    """

    def __init__(self, extra: Sequence[tuple[str, str | None]] = (), device: str = "cpu", text_cache: int = 4096,
                 precision: str = "fp32") -> None:
        from eclip.models.loading import bundled_fine_tunes, bundled_models

        self.device = device
        self.precision = precision  # the maps' autocast (`eclip.precision`); methods that need float32 keep it
        self.text_cache = text_cache
        self.specs: dict[str, tuple[str, str | None]] = {}
        for name, pretrained in extra:
            self.specs[f"{name}:{pretrained}" if pretrained else name] = (name, pretrained)
        self.extra = list(self.specs)  # the start-up models, first in the picker
        for name in bundled_models():
            self.specs.setdefault(name, (name, None))
        self.tunes = bundled_fine_tunes()
        self._models: dict[str, DenseCLIP] = {}
        self._locks: dict[str, threading.Lock] = {label: threading.Lock() for label in self.specs}
        self._loading = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self.specs)

    def get(self, label: str) -> DenseCLIP:
        """The model offered as `label`, loading it the first time."""
        from eclip.models.loading import load_model

        if label not in self.specs:
            raise ModelLoadError(f"model '{label}' is not offered by this server; pick one of {', '.join(self.specs)}")
        with self._loading:
            if label not in self._models:
                name, pretrained = self.specs[label]
                started = time.perf_counter()
                model = load_model(name, pretrained, device=self.device)
                model.text_cache_size = self.text_cache
                self._models[label] = model
                log.info("loaded %s in %.1f s", label, time.perf_counter() - started)
            return self._models[label]

    def load_start_up(self) -> None:
        """Load the start-up models now (the extra ones, or else the first offered): a model that cannot
        load fails before the server starts, and the first click does not wait for it."""
        for label in self.extra or self.labels[:1]:
            self.get(label)

    @contextmanager
    def using(self, label: str) -> Iterator[DenseCLIP]:
        model = self.get(label)
        with self._locks[label]:
            yield model

    def comparison(self, label: str) -> list[str]:
        """[vanilla, its fine-tunes] for a model that is either (the ECLIP one first); `MethodError` if it has none."""
        for vanilla, tuned in self.tunes.items():
            if label == vanilla or label in tuned:
                return [vanilla] + [t for t in tuned if t in self.specs]
        offered = ", ".join(f"{v} / {' / '.join(t)}" for v, t in self.tunes.items()) or "none in this installation"
        raise MethodError(f"'{label}' has no bundled fine-tune to compare with; pick a paired model ({offered}) "
                          "or untick the comparison")
