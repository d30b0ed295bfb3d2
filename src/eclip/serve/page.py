"""The Gradio page of the web demo, and `serve`, which `eclip serve` calls: widgets and wiring only.

What the page computes, limits and checks lives in the rest of `eclip.serve` (tested without a
browser); this module lays it out and turns every expected error into one line in the page.
Two tabs share the image inputs' layout. Explain: at 1280 x 900 the controls and Explain fit above
the fold: samples as thumbnails, the methods in families with a line each (those the model cannot
run greyed out), the maps as tiles of one size under column headers, with a colour bar, and the
numbers in a table. Segment (`eclip.serve.segment`): texts, one model, one method and the
background (a text or a threshold), then the image beside its labels in VOC's palette with a
legend, the share of the pixels per text, and the downloads, all above the fold.
Gradio's analytics and run history are off, the page loads no web font, and nothing is shared: a
server started here talks to the browsers that reach it and to nothing else. Everything it
writes stays in one temporary folder (`Workspace`), removed when it stops.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import gradio as gr  # noqa: E402

from eclip.errors import EclipError  # noqa: E402
from eclip.report.units import SC_LABEL, label  # noqa: E402
from eclip.serve.inputs import (  # noqa: E402
    TEMPLATE_CHOICES,
    BundledSamples,
    ServeLimits,
    check_request_size,
    parse_methods,
    parse_texts,
    read_upload,
    request_input,
    resolve_template,
    upload_too_big,
)
from eclip.serve.menu import FAMILIES, menu, unsupported  # noqa: E402
from eclip.serve.models import ModelCache  # noqa: E402
from eclip.serve.request import (  # noqa: E402
    ServeResult,
    explain_request,
    figure_bytes,
    read_manifest,
    request_bytes,
    write_figures,
)
from eclip.serve.segment import SegmentResult, segment_inputs, segment_methods  # noqa: E402
from eclip.serve.uploads import BodyLimit  # noqa: E402
from eclip.serve.workspace import Quotas, Workspace  # noqa: E402

log = logging.getLogger(__name__)

HEADER = """<div id="eclip-head"><b>eclip</b> · where does CLIP look?
<span>Pick a sample or upload an image, type what to look for, tick methods, then Explain.</span></div>"""

ABOUT = """Each map is min-max normalised to [0, 1] (the colour bar: bright is where the image matches the text
best). In the table, *cos* is the image-text cosine and *p* the softmax over your texts. **Vanilla vs
ECLIP** explains the same texts with a bundled model and its fine-tunes side by side: its ECLIP fine-tune
(masked max pooling; Li, Wang, Duan, Li 2022, arXiv 2209.07046) first, then the project's own variants
(e.g. -dense: the model's own head with a dense term on ECLIP's mask). On a bundled sample each map whose text names a shape gets
its **SC %** in the table: the mean of the map inside the shape's mask minus outside, in percent; below zero
the map prefers the background, the semantic shift ECLIP fixes. A column's header gives their mean, the
**mSC %** of `eclip evaluate`. The downloads hold each map at the image's size (`.npy`, K x H x W in
[0, 1], at most the server's map size a side) and an overlay figure (`.png`)."""

SEGMENT_ABOUT = """Every pixel takes the text whose map is highest there, as `eclip explain --segment` computes it: the
method's own windows and post-processing from its paper (sclip, naclip, clearclip, cliptrase; any other dense
method with SCLIP's). Class 0 is the background: a text of its own, or the pixels whose best probability (softmax
over the texts) is below the threshold. Colours are PASCAL VOC's palette (the background black). The downloads
hold the labels (`.npy`, H x W uint8, 0 the background and i the i-th text, at most the server's map size a side)
and the figure `eclip explain --segment` draws (`.png`)."""

TILE_PX = 184  # the tiles' size on the page, whatever the number of maps
SEGMENT_PX = 200  # the image and its labels on the Segment tab
BACKGROUND_MODES = [("a text", "text"), ("a probability threshold", "threshold")]
SHARE_COLUMNS = ["label", "text", "pixels %"]

CSS = """
.gradio-container{max-width:1280px !important;padding-top:6px !important}
#eclip-head{font-size:20px;margin:0 0 2px}#eclip-head span{font-size:14px;color:#555;margin-left:10px}
.eclip-status{min-height:2.2em}.eclip-status p{margin:0.2em 0}.eclip-status .eclip-error{color:#b00020;font-weight:600}
.eclip-status .eclip-ok{color:#2e6b30}
.eclip-samples .fixed-height{min-height:0;max-height:none;height:auto}.eclip-samples .grid-wrap{padding:30px 8px 8px}
.eclip-samples .grid-container{padding-top:0 !important}
.eclip-samples .grid-container{grid-template-columns:repeat(6,minmax(0,1fr)) !important;gap:6px}
.eclip-samples .thumbnail-item{cursor:pointer;width:100%;height:auto;aspect-ratio:1/1}
.eclip-family{padding:4px 8px !important}.eclip-family label{flex:1 1 100%;padding:1px 4px !important;font-size:13px;
margin:0 !important}.eclip-family .wrap{gap:1px !important}.eclip-family [data-testid=block-info]{margin-bottom:2px}
#methods-off p{margin:2px 0;font-size:12px;color:#777}
.eclip-bar{display:flex;align-items:center;gap:8px;font-size:13px;color:#444;margin:4px 0 8px}
.eclip-bar img{width:220px;height:12px;image-rendering:pixelated;border:1px solid #999}
.eclip-grid{display:grid;gap:10px 10px;overflow-x:auto;padding-bottom:4px}
.eclip-col{font-size:13px;line-height:1.25;border-bottom:2px solid #ccc;padding-bottom:3px;align-self:end}
.eclip-col b{font-size:14px}.eclip-col .eclip-msc{color:#555}
.eclip-tile{margin:0}.eclip-tile img{width:var(--tile);height:var(--tile);object-fit:contain;background:#eee;display:block}
.eclip-tile figcaption{font-size:12px;color:#333;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;width:var(--tile)}
.eclip-seg{display:flex;gap:10px;flex-wrap:wrap}.eclip-seg figure{margin:0}
.eclip-seg img{width:var(--tile);height:var(--tile);object-fit:contain;background:#eee;display:block}
.eclip-seg img.eclip-labels{image-rendering:pixelated}.eclip-seg figcaption{font-size:12px;color:#333}
.eclip-legend{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:2px 14px;font-size:13px}
.eclip-swatch{display:inline-block;width:12px;height:12px;border:1px solid #888;margin-right:5px;vertical-align:-1px}
"""

# Resolves when every tile in the grid has loaded (or after 10 s), in the browser.
MAPS_SHOWN = """() => new Promise((resolve) => {
  const start = performance.now();
  const tick = () => {
    const images = [...document.querySelectorAll('#maps img.eclip-map')];
    if (images.every((img) => img.complete) || performance.now() - start > 10000) resolve([]);
    else requestAnimationFrame(tick);
  };
  tick();
})"""

# An upload over the limit never reaches a handler (Gradio refuses it in the browser or with a 413): the
# browser passes its size to the server, whose answer goes to the status line like any other error.
UPLOAD_SIZE_WATCH = """() => {
  const send = (upload, file) => {
    if (!file || file.size <= LIMIT) return;
    const box = document.querySelector(`#${upload.id}-size textarea, #${upload.id}-size input`);
    if (!box) return;
    box.value = file.size + ' ' + Date.now();  // a new value each time: the same file twice is reported twice
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  const inUpload = (e) => e.target && e.target.closest && e.target.closest('.eclip-upload');  // its size box: '#<id>-size'
  document.addEventListener('change', (e) => { const u = inUpload(e); if (u && e.target.files) send(u, e.target.files[0]); }, true);
  document.addEventListener('drop', (e) => { const u = inUpload(e); if (u && e.dataTransfer) send(u, e.dataTransfer.files[0]); }, true);
}"""

SCORE_COLUMNS = ["model", "method", "text", "cos", "p", SC_LABEL]


def status_line(text: str, error: bool = False) -> str:
    """One escaped line for the status box (what the browser tests read)."""
    return f"<p class='{'eclip-error' if error else 'eclip-ok'}'>{html.escape(text)}</p>"


def failure_line(err: Exception, what: str) -> str:
    """The status line of a request that raised `err`: bad input says why; a bug says its type, its traceback goes to the log.

    Call it from the `except` block, where the traceback is still at hand.
    """
    if isinstance(err, EclipError):
        return status_line(str(err), error=True)
    log.exception("%s failed", what)
    return status_line(f"internal error ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); see the server log",
                       error=True)


def _url(path: Path) -> str:
    """The page's address of a file in the server's temporary root (Gradio serves that folder)."""
    return "gradio_api/file=" + urllib.parse.quote(str(path))


def colour_bar() -> str:
    """The maps' scale from 0 to 1 as an inline PNG (`colour_bar_image`, the colours of the figures' bars)."""
    from eclip.report.overlay import colour_bar_image

    buffer = io.BytesIO()
    colour_bar_image(256, 12).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def maps_html(result: ServeResult, bar: str, compare: bool) -> str:
    """The map grid: one column per (model, method) under its header, one row per text, tiles of one size."""
    roles = dict(zip(result.models, ("vanilla", "ECLIP", *["variant"] * (len(result.models) - 2)))) if compare else {}
    heads = []
    for model, method in result.columns:
        msc = result.msc_percent(model, method)
        shown = "" if msc is None else f"<br><span class='eclip-msc'>{label('msc')} {msc:+.1f}</span>"
        heads.append(f"<div class='eclip-col'>{html.escape((roles[model] + ' · ') if model in roles else '')}{html.escape(model)}<br>"
                     f"<b>{html.escape(method)}</b>{shown}</div>")
    tiles = [f"<figure class='eclip-tile'><img class='eclip-map' src='{_url(p.tile)}' alt='{html.escape(p.method)} map for "
             f"{html.escape(p.text)}'><figcaption title='{html.escape(p.text)}'>{html.escape(p.caption)}</figcaption></figure>"
             for p in result.panels]
    return (f"<div class='eclip-bar'><span>map value: 0</span><img src='{bar}' alt='colour bar'><span>1</span>"
            "<span>(each map min-max normalised)</span></div>"
            f"<div class='eclip-grid' style='--tile:{TILE_PX}px;grid-template-columns:repeat({len(result.columns)},{TILE_PX}px)'>"
            f"{''.join(heads)}{''.join(tiles)}</div>")


def score_rows(result: ServeResult) -> list[list]:
    return [[p.model, p.method, p.text, round(p.cosine, 4), round(p.probability, 4),
             "" if p.sc_percent is None else round(p.sc_percent, 1)] for p in result.panels]


def segmentation_html(result: SegmentResult) -> str:
    """The image beside its labels in VOC's palette, both at one size, and a legend of the texts with their colours."""
    from eclip.segmentation.figure import palette

    colours = palette(len(result.classnames))
    legend = "".join(f"<li><span class='eclip-swatch' style='background:rgb{tuple(int(c) for c in colours[i])}'></span>"
                     f"{html.escape(name)}</li>" for i, name in enumerate(result.legend))
    return (f"<div class='eclip-seg' style='--tile:{SEGMENT_PX}px'>"
            f"<figure><img class='eclip-image' src='{_url(result.image_tile)}' alt='image'><figcaption>image</figcaption></figure>"
            f"<figure><img class='eclip-labels' src='{_url(result.labels_tile)}' alt='segmentation'>"
            f"<figcaption>{html.escape(result.method)} on {html.escape(result.model)}</figcaption></figure></div>"
            f"<ul class='eclip-legend'>{legend}</ul>")


def share_rows(result: SegmentResult) -> list[list]:
    return [[i, name, round(100 * share, 1)] for i, (name, share) in enumerate(zip(result.legend, result.shares))]


def methods_off_html(label: str, reasons: dict[str, str]) -> str:
    """A style that greys out (and blocks) the methods `label` cannot run, and one line saying so."""
    if not reasons:
        return ""
    selectors = ",".join(f'.eclip-family label:has(input[name="{name}"])' for name in reasons)
    why = sorted(set(reasons.values()))[0].split("' ", 1)[-1]  # "is not defined for resnet models"
    return (f"<style>{selectors}{{opacity:0.4;pointer-events:none;text-decoration:line-through}}</style>"
            f"<p>greyed out: {html.escape(', '.join(reasons))} {html.escape(why)} ({html.escape(label)})</p>")


@contextmanager
def gradio_temp_dir(path: Path) -> Iterator[None]:
    """Point Gradio's temporary folder at `path` while the page is built and served.

    Its components and app read `GRADIO_TEMP_DIR` when they are made; its routes module read it once
    at import (a folder it makes for every app), so that copy is pointed there too.
    """
    import gradio.routes

    before = os.environ.get("GRADIO_TEMP_DIR"), gradio.routes.DEFAULT_TEMP_DIR
    os.environ["GRADIO_TEMP_DIR"] = gradio.routes.DEFAULT_TEMP_DIR = str(path)
    try:
        yield
    finally:
        if before[0] is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before[0]
        gradio.routes.DEFAULT_TEMP_DIR = before[1]


def build_app(models: ModelCache, limits: ServeLimits, workspace: Workspace, default_model: str | None = None,
              samples: BundledSamples | None = None) -> gr.Blocks:
    """The page: image, texts and methods on top, the maps, scores and downloads under them.

    Call it inside `gradio_temp_dir(workspace.root)`, so that what Gradio writes stays in the workspace.
    """
    from eclip.writing import atomic_write

    samples = samples or BundledSamples()
    default_model = default_model or models.labels[0]
    families = menu()
    known = [item.name for items in families.values() for item in items]
    bar = colour_bar()
    thumbs = []
    for sample_id in samples.ids:
        source = samples.image_path(sample_id)
        thumbs.append((str(atomic_write(workspace.static / f"{sample_id}.png", lambda tmp, s=source: tmp.write_bytes(s.read_bytes()))),
                       sample_id))

    def menu_state(label: str, *picked: list[str]) -> tuple:
        """Per family: its ticks without the methods `label` cannot run; then the greyed-out style."""
        try:
            reasons = unsupported(models.get(label), known)
        except EclipError as err:
            return (*(gr.update() for _ in picked), status_line(str(err), error=True))
        return (*([name for name in values or [] if name not in reasons] for values in picked), methods_off_html(label, reasons))

    def pick_sample(evt: gr.SelectData):
        sample_id = samples.ids[evt.index]
        return sample_id, thumbs[evt.index][0], "\n".join(samples.classes_present(sample_id)), None, ""

    def preview_upload(data):
        if data is None:
            return gr.update(), gr.update(), ""
        try:
            with workspace.job():
                folder = workspace.new_folder(len(data) + limits.display_side ** 2 * 3)
                try:
                    item = read_upload(data, folder, limits)
                    shown = folder / "preview.jpg"
                    item.image.thumbnail((limits.display_side, limits.display_side))
                    atomic_write(shown, lambda tmp: item.image.convert("RGB").save(tmp, format="JPEG", quality=90))
                finally:
                    workspace.settle(folder)
            return str(shown), "", ""
        except EclipError as err:
            return None, gr.update(), status_line(str(err), error=True)

    def upload_size(raw: str):
        size = (raw or "").split(" ")[0]
        message = upload_too_big(int(size), limits) if size.isdigit() else None
        return status_line(message, error=True) if message else gr.update()

    def run(data, sample_id: str, raw_texts: str, template: str, model_label: str, compare: bool, dense: list[str],
            attention: list[str], gradient: list[str], perturbation: list[str], other: list[str],
            progress=gr.Progress(track_tqdm=True)):
        """Explain the image (an upload, or else the sample named by id) for the texts with the ticked methods."""
        empty = ("", [], None, None)
        try:
            with workspace.job():
                result = explain(data, sample_id, raw_texts, template, model_label, compare,
                                 [*(dense or []), *(attention or []), *(gradient or []), *(perturbation or []), *(other or [])],
                                 lambda fraction, desc: progress(fraction, desc=desc))
        except Exception as err:  # bad input, or a bug: one line here either way
            return (failure_line(err, "explain"), *empty)
        message = (f"{result.name}: {len(result.texts)} text(s) x {', '.join(result.methods)} on {' vs '.join(result.models)} "
                   f"in {result.seconds:.3f} s")
        return status_line(message), maps_html(result, bar, compare), score_rows(result), result.folder.name, None

    def explain(data, sample_id, raw_texts, template, model_label, compare, picked, progress) -> ServeResult:
        texts = parse_texts(raw_texts, limits)
        prompt = resolve_template(template, limits)
        methods = parse_methods(picked, known, limits)
        labels = models.comparison(model_label) if compare else [model_label]
        check_request_size(len(texts), len(methods), len(labels), limits)
        with request_input(workspace, samples, data, sample_id, limits, lambda item: request_bytes(
                (item.image.height, item.image.width), len(texts), len(methods), len(labels), limits)) as (folder, item):
            return explain_request(models, item, texts, prompt, labels, methods, folder, progress=progress, limits=limits)

    def downloads(request_id: str | None):
        """The maps (.npy) and overlay figures (.png) of the session's last request, if the server still keeps them."""
        folder = workspace.folder(request_id)
        if folder is None:
            return None
        try:
            with workspace.job():
                if not workspace.reserve(folder, figure_bytes(read_manifest(folder))):
                    return None
                try:
                    return [str(path) for path in write_figures(folder, samples, limits)]
                finally:
                    workspace.settle(folder)
        except Exception:  # the maps are on the page already; losing the files must not break it
            log.exception("writing the downloads failed")
            return None

    def run_segment(data, sample_id: str, raw_texts: str, template: str, model_label: str, method: str, background_mode: str,
                    background_text: str, threshold: float):
        """Segment the image (an upload, or else the sample named by id) for the texts with one model and method."""
        try:
            with workspace.job():
                result = segment_inputs(models, workspace, samples, limits, data, sample_id, raw_texts, template, model_label,
                                        method, background_mode, background_text, threshold)
        except Exception as err:  # bad input, or a bug: one line here either way
            return failure_line(err, "segment"), "", [], None
        height, width = result.size
        message = (f"{result.name}: {len(result.classnames) - 1} text(s) + {result.legend[0]}, {result.method} on {result.model}, "
                   f"{height} x {width} labels in {result.seconds:.3f} s")
        return status_line(message), segmentation_html(result), share_rows(result), [str(path) for path in result.downloads]

    light = dict(concurrency_limit=2, concurrency_id="light", api_visibility="private", show_progress="hidden")

    def image_inputs(prefix: str) -> tuple:
        """The image column of a tab: sample thumbnails, an upload and its preview; the picked sample's id and the size
        of an upload too big to send, hidden. Element ids start with `prefix`."""
        gallery = gr.Gallery([path for path, _ in thumbs], label="Samples, with masks: click one", columns=6, height="auto",
                             allow_preview=False, object_fit="contain", elem_id=f"{prefix}samples", elem_classes=["eclip-samples"],
                             buttons=[], interactive=False)
        upload = gr.File(label=f"... or upload an image (at most {limits.max_upload_mb:g} MB)", type="binary", file_types=["image"],
                         elem_id=f"{prefix}upload", elem_classes=["eclip-upload"], height=130)
        preview = gr.Image(label="image", interactive=False, height=190, elem_id=f"{prefix}preview", buttons=[])
        sample = gr.Textbox(visible="hidden", elem_id=f"{prefix}sample", label="sample id")
        size_box = gr.Textbox(visible="hidden", elem_id=f"{prefix}upload-size", label="upload size")
        return gallery, upload, preview, sample, size_box

    def wire_image_inputs(gallery, upload, preview, sample, size_box, texts, status) -> None:
        gallery.select(pick_sample, None, [sample, preview, texts, upload, status], **light)
        upload.upload(preview_upload, upload, [preview, sample, status], **light)
        upload.clear(lambda: (None, ""), None, [preview, status], **light)
        size_box.change(upload_size, size_box, status, **light)

    with gr.Blocks(title="eclip", analytics_enabled=False) as demo:
        gr.HTML(HEADER, js_on_load=None)
        result_state = gr.State(None)  # the id of the session's last request folder, for the downloads step
        with gr.Tabs(elem_id="eclip-tabs"):
            with gr.Tab("Explain", id="explain-tab", elem_id="explain-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=300):
                        image = image_inputs("")
                    with gr.Column(scale=3, min_width=300):
                        texts = gr.Textbox(label=f"Texts, one per line (at most {limits.max_texts})", lines=4, max_lines=8,
                                           elem_id="texts", placeholder="a red star\na blue circle")
                        template = gr.Dropdown(list(TEMPLATE_CHOICES), value="verbatim", allow_custom_value=True, elem_id="template",
                                               label="Prompt: verbatim, a template with {}, or an ensemble")
                        model = gr.Dropdown(models.labels, value=default_model, label="Model", elem_id="model")
                        compare = gr.Checkbox(False, label="Vanilla vs ECLIP: the model next to its fine-tunes", elem_id="compare")
                        button = gr.Button("Explain", variant="primary", elem_id="explain")
                        status = gr.HTML("", elem_id="status", elem_classes=["eclip-status"], js_on_load=None)
                    with gr.Column(scale=4, min_width=340, elem_id="methods"):
                        groups = [gr.CheckboxGroup([(item.label, item.name) for item in families[family]],
                                                   value=["itsm"] if family == "dense" else [], label=f"{family}: {FAMILIES[family]}",
                                                   elem_id=f"methods-{family}", elem_classes=["eclip-family"])
                                  for family in FAMILIES]
                        off = gr.HTML(menu_state(default_model, *([] for _ in groups))[-1], elem_id="methods-off", js_on_load=None)
                maps = gr.HTML("", elem_id="maps", js_on_load=None)
                scores = gr.Dataframe(headers=SCORE_COLUMNS, datatype=["str", "str", "str", "number", "number", "number"],
                                      label="scores", interactive=False, elem_id="scores", max_height=420)
                files = gr.File(label="Downloads: maps (.npy, K x H x W in [0, 1]) and overlay figures (.png)", file_count="multiple",
                                interactive=False, elem_id="downloads")
                with gr.Accordion("How to read the page", open=False):
                    gr.Markdown(ABOUT)
            with gr.Tab("Segment", id="segment-tab", elem_id="segment-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=300):
                        seg_image = image_inputs("seg-")
                    with gr.Column(scale=3, min_width=300):
                        seg_texts = gr.Textbox(label=f"Texts, one per line (at most {limits.max_texts}): the classes", lines=4,
                                               max_lines=8, elem_id="seg-texts", placeholder="a red star\na blue circle")
                        seg_template = gr.Dropdown(list(TEMPLATE_CHOICES), value="verbatim", allow_custom_value=True,
                                                   elem_id="seg-template", label="Prompt: verbatim, a template with {}, or an ensemble")
                        seg_model = gr.Dropdown(models.labels, value=default_model, label="Model", elem_id="seg-model")
                        labels = {item.name: item.label for item in families["dense"]}
                        seg_method = gr.Dropdown([(labels[name], name) for name in segment_methods()], value=segment_methods()[0],
                                                 label="Method (those with a segmentation protocol first)", elem_id="seg-method")
                        background_mode = gr.Radio(BACKGROUND_MODES, value="text", label="Background: class 0 is",
                                                   elem_id="seg-background-mode")
                        with gr.Row():
                            background_text = gr.Textbox("background", label="background text", max_lines=1, min_width=120,
                                                         elem_id="seg-background")
                            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="or: below this probability",
                                                  min_width=120, elem_id="seg-threshold")
                        seg_button = gr.Button("Segment", variant="primary", elem_id="segment")
                        seg_status = gr.HTML("", elem_id="seg-status", elem_classes=["eclip-status"], js_on_load=None)
                    with gr.Column(scale=4, min_width=340):
                        segmentation = gr.HTML("", elem_id="segmentation", js_on_load=None)
                        shares = gr.Dataframe(headers=SHARE_COLUMNS, datatype=["number", "str", "number"], label="share of the pixels",
                                              interactive=False, elem_id="shares", max_height=300)
                        seg_files = gr.File(label="Downloads: labels (.npy, H x W, 0 background, i text i) and figure (.png)",
                                            file_count="multiple", interactive=False, elem_id="seg-downloads")
                with gr.Accordion("How to read the segmentation", open=False):
                    gr.Markdown(SEGMENT_ABOUT)

        wire_image_inputs(*image, texts, status)
        wire_image_inputs(*seg_image, seg_texts, seg_status)
        model.change(menu_state, [model, *groups], [*groups, off], **light)
        # The figures for the downloads are drawn once the browser has the maps: drawing them earlier
        # would compete with serving the tiles for the server's time.
        upload, sample = image[1], image[3]
        button.click(run, [upload, sample, texts, template, model, compare, *groups], [status, maps, scores, result_state, files],
                     api_name="explain", show_progress_on=[status], concurrency_id="explain",
                     ).then(None, js=MAPS_SHOWN).then(downloads, result_state, files, api_name="downloads", show_progress="hidden")
        # One queue for both tabs' jobs: `--concurrency` bounds them together.
        seg_button.click(run_segment, [seg_image[1], seg_image[3], seg_texts, seg_template, seg_model, seg_method, background_mode,
                                       background_text, threshold], [seg_status, segmentation, shares, seg_files],
                         api_name="segment", show_progress_on=[seg_status], concurrency_id="explain")
    return demo


def launch(demo: gr.Blocks, workspace: Workspace, host: str, port: int, limits: ServeLimits, concurrency: int, queue_size: int,
           max_sessions: int, upload_max_age: float = 3600.0, quiet: bool = False) -> None:
    """Serve `demo` until interrupted: a queue caps the jobs, request bodies and uploads are capped, nothing is shared.

    Gradio's file sets forget what the workspace removes (they would grow with every request), and
    Gradio's area is swept after every upload (`BodyLimit`).
    """
    from starlette.middleware import Middleware

    def forget(paths: set[str]) -> None:
        for file_set in demo.temp_file_sets:
            file_set.difference_update(paths)

    workspace.forget = forget
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    demo.launch(
        server_name=host, server_port=port, share=False, max_file_size=limits.max_upload_bytes, prevent_thread_lock=True,
        footer_links=[], ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, run_history=False,
        state_session_capacity=max_sessions, quiet=quiet,
        app_kwargs={"middleware": [Middleware(BodyLimit, workspace=workspace, upload_bytes=limits.max_upload_bytes,
                                              max_age=upload_max_age)]},
        theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
        css=CSS, js=UPLOAD_SIZE_WATCH.replace("LIMIT", str(limits.max_upload_bytes)),
    )
    try:
        while demo.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close(verbose=False)


def serve(models: ModelCache, limits: ServeLimits, host: str, port: int, concurrency: int = 1, queue_size: int = 32,
          quotas: Quotas = Quotas(), max_sessions: int = 1000, ready: Callable[[], None] | None = None) -> None:
    """Load the start-up models, call `ready` (the caller's moment to say where the page is), and serve the
    page until interrupted; every file the server wrote is removed at the end, whatever ends it."""
    workspace = Workspace(quotas)
    try:
        models.load_start_up()
        with gradio_temp_dir(workspace.root):
            demo = build_app(models, limits, workspace)
            if ready is not None:
                ready()
            launch(demo, workspace, host, port, limits, concurrency, queue_size, max_sessions, quiet=True)
    finally:
        workspace.close()
