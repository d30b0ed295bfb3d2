"""The Gradio page of the web demo, and `serve`, which `eclip serve` calls: widgets and wiring only.

What the page computes, limits and checks lives in the rest of `eclip.serve` (tested without a
browser); this module lays it out and turns every expected error into one line in the page.
Gradio's analytics are switched off before it is imported, the page loads no web font, and
nothing is shared: a server started here talks to the browsers that reach it and to nothing else.
"""
from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import gradio as gr  # noqa: E402

from eclip.errors import EclipError, ImageLoadError  # noqa: E402
from eclip.serve import (  # noqa: E402
    TEMPLATE_CHOICES,
    BundledSamples,
    ModelCache,
    ServeLimits,
    ServeResult,
    Workspace,
    explain_request,
    parse_texts,
    read_upload,
    resolve_template,
    write_figures,
)

log = logging.getLogger(__name__)

INTRO = """# eclip · where does CLIP look?
Upload an image or pick a bundled sample, type what to look for (one text per line), pick a model and
one or more methods. Each map is min-max normalised (red: where the image matches the text best);
*cos* is the image-text cosine, *p* the softmax over your texts. **Vanilla vs ECLIP** shows the same
texts on a bundled model and its ECLIP fine-tune side by side; on a bundled sample each map also gets
its score contrast (mean inside the object's mask minus outside; below zero the map prefers the
background, the semantic shift ECLIP fixes)."""

# The status line in colour; the map grid grows with its rows, and each caption is a full line under its overlay.
CSS = """#status p{margin:0.3em 0}#status .eclip-error{color:#b00020;font-weight:600}#status .eclip-ok{color:#2e6b30}
#maps .fixed-height{max-height:none;min-height:0}
#maps .thumbnail-item{aspect-ratio:auto;display:flex;flex-direction:column}
#maps .thumbnail-item>img{aspect-ratio:1/1;height:auto}
#maps .caption-label{position:static;max-width:none;white-space:normal;opacity:1;border:none;border-radius:0;
font-size:11px;line-height:1.3}"""

# Resolves when every overlay image in the grid has loaded (or after 10 s), in the browser.
MAPS_SHOWN = """() => new Promise((resolve) => {
  const start = performance.now();
  const tick = () => {
    const images = [...document.querySelectorAll('#maps img')];
    if (images.every((img) => img.complete) || performance.now() - start > 10000) resolve([]);
    else requestAnimationFrame(tick);
  };
  tick();
})"""

SCORE_COLUMNS = ["model", "method", "text", "cosine", "probability", "score contrast"]


def status_line(text: str, error: bool = False) -> str:
    """One escaped line for the status box (what the browser tests read)."""
    return f"<p class='{'eclip-error' if error else 'eclip-ok'}'>{html.escape(text)}</p>"


def _score_rows(result: ServeResult) -> list[list]:
    return [[p.model, p.method, p.text, round(p.cosine, 4), round(p.probability, 4),
             "" if p.contrast is None else round(p.contrast, 3)] for p in result.panels]


def build_app(models: ModelCache, limits: ServeLimits, default_model: str | None = None,
              workspace: Workspace | None = None, samples: BundledSamples | None = None) -> gr.Blocks:
    """The page: inputs on the left, status, overlays, scores and downloads on the right."""
    from eclip.methods.base import available_methods
    from eclip.report.overlay import heat_overlay

    samples = samples or BundledSamples()
    workspace = workspace or Workspace()
    methods = available_methods()
    vit_only = [name for name, cls in methods.items() if "resnet" not in cls.archs]
    default_model = default_model or models.labels[0]

    def preview_sample(sample_id):
        if not sample_id:
            return gr.update(), gr.update(), gr.update(), ""
        try:
            item = samples.get(sample_id)
            return item.image, "\n".join(samples.classes_present(sample_id)), None, ""
        except EclipError as err:
            return None, gr.update(), gr.update(), status_line(str(err), error=True)

    def preview_upload(data):
        if data is None:
            return gr.update(), gr.update(), ""
        try:
            item = read_upload(data, workspace.new_folder(), limits)
            return item.image, None, ""
        except EclipError as err:
            return None, None, status_line(str(err), error=True)

    def explain(data, sample_id, raw_texts, template, model_label, method_names, compare, progress=gr.Progress(track_tqdm=True)):
        empty = (gr.update(value=[]), [], None, None)
        try:
            texts = parse_texts(raw_texts, limits)
            prompt = resolve_template(template)
            labels = models.comparison(model_label) if compare else [model_label]
            folder = workspace.new_folder()
            item = read_upload(data, folder, limits) if data is not None else samples.get(sample_id) if sample_id else None
            if item is None:
                raise ImageLoadError("no image: upload one or pick a bundled sample")
            result = explain_request(models, item, texts, prompt, labels, list(method_names or []), folder,
                                     progress=lambda fraction, desc: progress(fraction, desc=desc), limits=limits)
            gallery = [(heat_overlay(result.display, p.heat), p.caption) for p in result.panels]
        except EclipError as err:
            return (status_line(str(err), error=True), *empty)
        except Exception as err:  # a bug, not bad input: one line here, the traceback in the server log
            log.exception("explain failed")
            return (status_line(f"internal error ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                                "see the server log", error=True), *empty)
        message = (f"{result.name}: {len(texts)} text(s) x {', '.join(result.methods)} on {' vs '.join(result.models)} "
                   f"in {result.seconds:.3f} s")
        return (status_line(message), gr.update(value=gallery, columns=result.columns), _score_rows(result), result, None)

    def downloads(result):
        if result is None:
            return None
        try:
            return [str(path) for path in write_figures(result)]
        except Exception:  # the maps are on the page already; losing the files must not break it
            log.exception("writing the downloads failed")
            return None

    with gr.Blocks(title="eclip", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(INTRO)
        result_state = gr.State(None, time_to_live=3600)  # display-size maps, for the downloads step
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                upload = gr.File(label=f"Upload an image (at most {limits.max_upload_mb:g} MB)", type="binary",
                                 file_types=["image"], elem_id="upload")
                sample = gr.Dropdown(samples.choices(), value=None, label="... or pick a bundled sample (with masks)",
                                     elem_id="sample")
                preview = gr.Image(label="input image", interactive=False, height=180, elem_id="preview")
                texts = gr.Textbox(label=f"Texts, one per line (at most {limits.max_texts})", lines=3, elem_id="texts",
                                   placeholder="a red star\na blue circle")
                template = gr.Dropdown(list(TEMPLATE_CHOICES), value="verbatim", allow_custom_value=True, elem_id="template",
                                       label="Prompt: verbatim, a template with {}, or a prompt ensemble")
                model = gr.Dropdown(models.labels, value=default_model, label="Model", elem_id="model")
                method = gr.CheckboxGroup(list(methods), value=["itsm"], label="Methods", elem_id="methods",
                                          info=f"ViT only: {', '.join(vit_only)}. rise runs hundreds of forwards.")
                compare = gr.Checkbox(False, label="Vanilla vs ECLIP: the model next to its bundled ECLIP fine-tune",
                                      elem_id="compare")
                run = gr.Button("Explain", variant="primary", elem_id="explain")
            with gr.Column(scale=2):
                status = gr.HTML("", elem_id="status")
                gallery = gr.Gallery(label="maps", columns=2, height="auto", object_fit="contain", format="jpeg",
                                     elem_id="maps")
                scores = gr.Dataframe(headers=SCORE_COLUMNS, label="scores", interactive=False, elem_id="scores")
                files = gr.File(label="Downloads: maps (.npy, K x H x W in [0, 1]) and overlays (.png)",
                                file_count="multiple", interactive=False, elem_id="downloads")

        light = dict(concurrency_limit=2, concurrency_id="preview", api_visibility="private")
        sample.input(preview_sample, sample, [preview, texts, upload, status], **light)
        upload.upload(preview_upload, upload, [preview, sample, status], **light)
        upload.clear(lambda: (None, ""), None, [preview, status], **light)
        # The figures for the downloads are drawn once the browser has the maps: drawing them earlier
        # would compete with serving the overlay images for the server's time.
        run.click(explain, [upload, sample, texts, template, model, method, compare],
                  [status, gallery, scores, result_state, files], api_visibility="private",
                  ).then(None, js=MAPS_SHOWN).then(downloads, result_state, files, api_visibility="private")
    return demo


def launch(demo: gr.Blocks, host: str, port: int, limits: ServeLimits, concurrency: int, queue_size: int,
           quiet: bool = False) -> None:
    """Serve `demo` until interrupted: a queue caps the jobs, uploads are capped, nothing is shared."""
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    demo.launch(
        server_name=host, server_port=port, share=False, max_file_size=limits.max_upload_bytes,
        footer_links=[], ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False,
        theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
        css=CSS, quiet=quiet,
    )


def serve(models: ModelCache, limits: ServeLimits, host: str, port: int, concurrency: int = 1, queue_size: int = 32,
          ready: Callable[[], None] | None = None) -> None:
    """Load the start-up models, call `ready` (the caller's moment to say where the page is), and serve the
    page until interrupted; the uploads' folder is removed at the end."""
    models.load_start_up()
    if ready is not None:
        ready()
    workspace = Workspace()
    try:
        launch(build_app(models, limits, workspace=workspace), host, port, limits, concurrency, queue_size, quiet=True)
    finally:
        workspace.close()
