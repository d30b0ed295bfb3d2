"""The web demo `eclip serve` starts: one web request in, maps, scores and files out.

The page (`eclip.serve.page`, the only module that imports Gradio) only lays out widgets and calls
these functions, so everything it shows is computed, limited and tested here:
- images are decoded by `eclip.data.images.load_image` under the server's own limits (bytes,
  pixels) and explained by `eclip.explain.explain_images`, the code path of `eclip explain`, and
  written by its `save_maps`, so a map downloaded from the page is the `.npy` the command writes
  for the same input;
- models are loaded once per server (`ModelCache`) and used by one job at a time each (methods
  hook into a model while they run); text embeddings are cached per model by the adapter;
- the "vanilla vs ECLIP" view pairs a bundled model with its fine-tune through
  `eclip.models.loading.eclip_pairs`, which reads the model folders' configs;
- with a bundled sample (exact masks) each map gets its score contrast, mean of the map inside
  the named class's mask minus outside (ECLIP, Li, Wang, Duan, Li 2022, arXiv 2209.07046,
  `eclip.metrics.ScoreContrast.per_pair`, as `eclip demo`, `eclip shift` and `eclip evaluate`
  compute it);
- nothing here opens a path that came from the browser: uploads arrive as bytes and are written
  to a folder this module made; samples are named by id and looked up in the package.
"""
from __future__ import annotations

from eclip.serve.inputs import (
    TEMPLATE_CHOICES,
    BundledSamples,
    ImageInput,
    ServeLimits,
    contrast_class,
    parse_texts,
    read_upload,
    resolve_template,
)
from eclip.serve.models import ModelCache
from eclip.serve.request import (
    Figure,
    MapPanel,
    ServeResult,
    Workspace,
    check_methods,
    explain_request,
    write_figures,
)

__all__ = ["TEMPLATE_CHOICES", "BundledSamples", "Figure", "ImageInput", "MapPanel", "ModelCache", "ServeLimits", "ServeResult",
           "Workspace", "check_methods", "contrast_class", "explain_request", "parse_texts", "read_upload",
           "resolve_template", "write_figures"]
