"""The web demo `eclip serve` starts: one web request in, maps, scores and files out, within bounds.

The page (`eclip.serve.page`, the only module that imports Gradio) only lays out widgets and calls
these functions, so everything it shows is computed, limited and tested here:
- images are decoded by `eclip.data.images.load_image` under the server's own limits (bytes,
  pixels) and explained by `eclip.explain.explain_images`, the code path of `eclip explain`, and
  written by its `save_maps` with the server's map size, so a map downloaded from the page is the
  `.npy` the command writes for the same input and `--map-size`;
- a request is limited before any work (texts, their length, the prompt template's length, the
  methods named once each, texts x methods x models);
- models are loaded once per server (`ModelCache`) and used by one job at a time each (methods
  hook into a model while they run); text embeddings are cached per model by the adapter, the
  most recently used few thousand;
- what a request computes is written once to a folder of its own and nothing of it stays in
  memory: the session keeps the folder's id. The folders, and Gradio's uploads, live under one
  temporary root with quotas, oldest removed first, and the root is removed when the server stops
  (`Workspace`); request bodies are capped before they are read (`BodyLimit`);
- the "vanilla vs ECLIP" view puts a bundled model beside its fine-tunes, the ECLIP one first,
  through `eclip.models.loading.bundled_fine_tunes`, which reads the model folders' configs;
- with a bundled sample (exact masks) each map gets its score contrast, mean of the map inside
  the named class's mask minus outside (ECLIP, Li, Wang, Duan, Li 2022, arXiv 2209.07046,
  `eclip.metrics.ScoreContrast.per_pair`, as `eclip demo`, `eclip shift` and `eclip evaluate`
  compute it), shown in percent as "SC %", and their mean per (model, method) as "mSC %";
- the Segment view (`eclip.serve.segment`) labels every pixel with the text whose map is highest,
  through the segmenter, vocabulary and protocol of `eclip explain --segment`, so its labels are
  the `.npy` that command writes;
- nothing here opens a path that came from the browser: uploads arrive as bytes and are written
  to a folder this module made; samples and request folders are named by id and looked up.
"""
from __future__ import annotations

from eclip.serve.inputs import (
    TEMPLATE_CHOICES,
    BundledSamples,
    ImageInput,
    ServeLimits,
    check_request_size,
    contrast_class,
    parse_methods,
    parse_texts,
    read_upload,
    resolve_template,
    upload_too_big,
)
from eclip.serve.models import ModelCache
from eclip.serve.request import (
    MapPanel,
    ServeResult,
    check_methods,
    explain_request,
    read_manifest,
    request_bytes,
    write_figures,
)
from eclip.serve.segment import SegmentResult, segment_inputs, segment_methods, segment_request
from eclip.serve.workspace import Quotas, Workspace

__all__ = ["TEMPLATE_CHOICES", "BundledSamples", "ImageInput", "MapPanel", "ModelCache", "Quotas", "SegmentResult", "ServeLimits",
           "ServeResult", "Workspace", "check_methods", "check_request_size", "contrast_class", "explain_request", "parse_methods",
           "parse_texts", "read_manifest", "read_upload", "request_bytes", "resolve_template", "segment_inputs", "segment_methods",
           "segment_request", "upload_too_big", "write_figures"]
