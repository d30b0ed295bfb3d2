"""Open a CLIP by name or path and wrap it in the right DenseCLIP adapter.

Accepted, in the order they are tried:
- a bundled model name (`synth-vit`, `synth-rn`, ...): weights shipped inside the package, offline;
- a path to an eclip model folder (`config.json` with format eclip-model/1 + `model.safetensors`),
  as `eclip train` writes it;
- a path to a Hugging Face CLIPModel folder (`config.json` with model_type "clip");
- `hf-hub:ORG/NAME`: an open_clip model from the Hugging Face hub;
- an open_clip model name (`ViT-B-16`, `RN50`, ...) with `pretrained` an open_clip tag
  (`openai`, `laion2b_s34b_b88k`, ...) or a local checkpoint file (a state dict as open_clip
  saves it), or None for random weights.

Everything local is checked before anything is fetched or built: a name that is none of these
gets the closest known name ("did you mean"), a path to a folder that does not exist says so,
an unknown tag lists the model's tags, and weights already in the local cache load without the
network (`hub`, which also fails in one line at once when the hub cannot be reached).
"""
from __future__ import annotations

import difflib
import json
import logging
import sys
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from eclip.errors import EclipError, ModelLoadError
from eclip.models.folder import CONFIG_NAME, is_model_folder, load_model_folder, read_config

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from eclip.models.adapter import DenseCLIP

log = logging.getLogger(__name__)

BUNDLED = {
    "synth-vit": "ViT (patch 8, 96 px, class-token pooling) trained by eclip on synthetic scenes",
    "synth-vit-eclip": "ECLIP: synth-vit fine-tuned with masked max pooling (similarity mask, background negatives, "
                       "object captions; RECIPE.md)",
    "synth-vit-avg": "synth-vit fine-tuned with average pooling (not ECLIP; the best head that is not masked max; RECIPE.md)",
    "synth-vit-dense": "synth-vit fine-tuned with its own head and a dense term (peak form) on ECLIP's free-attention mask, "
                       "distilled towards synth-vit (ours, not the paper's head; RECIPE.md)",
    "synth-vit-phrases": "synth-vit-dense's recipe plus the phrase term: each phrase a caption names must win the batch's "
                         "phrases somewhere on the foreground (ours, not the paper's head; RECIPE.md)",
    "synth-rn": "ResNet (192 px, attention pooling) trained by eclip on synthetic scenes",
    "synth-rn-eclip": "ECLIP: synth-rn fine-tuned with masked max pooling (attention-pool mask, background negatives, "
                      "shape captions; RECIPE.md)",
    "synth-rn-eclip-dense": "ECLIP plus ours: synth-rn-eclip's recipe with a dense term (peak form) on the same mask and "
                            "distillation towards synth-rn (RECIPE.md)",
    "synth-rn-eclip-phrases": "ECLIP plus ours: synth-rn-eclip-dense's recipe plus the phrase term (each phrase a caption "
                              "names must win the batch's phrases somewhere on the foreground; RECIPE.md)",
}


def bundled_dir(name: str) -> Path:
    """Where the bundled model `name` lives inside the installed package."""
    return Path(str(resources.files("eclip") / "assets" / "models" / name))


def bundled_models() -> dict[str, str]:
    """Bundled model names that are present in this installation -> one-line description."""
    return {name: text for name, text in BUNDLED.items() if is_model_folder(bundled_dir(name))}


def bundled_fine_tunes() -> dict[str, list[str]]:
    """Bundled model -> the bundled models fine-tuned from it, read from the fine-tunes' own config.json.

    A bundled model is a fine-tune of the other bundled model its training started from
    (`training.start.model`), whatever its head (a model trained on from itself, as `synth-vit`'s
    later stages, is no fine-tune). ECLIP's own head (`masked_max`) comes first, then the others
    by name. Names are not parsed: a fine-tune renamed or retrained keeps its pairing through its
    config.
    """
    present = bundled_models()
    found: dict[str, list[tuple[bool, str]]] = {}
    for name in present:
        try:
            config = json.loads((bundled_dir(name) / "config.json").read_text())
        except (OSError, ValueError):
            continue
        head = (config.get("pooling") or {}).get("head", "attention")
        start = (((config.get("training") or {}).get("start")) or {}).get("model")
        if start in present and start != name:
            found.setdefault(start, []).append((head != "masked_max", name))
    return {base: [name for _, name in sorted(tunes)] for base, tunes in found.items()}


def eclip_pairs() -> dict[str, str]:
    """Bundled vanilla model -> its ECLIP fine-tune: the first of `bundled_fine_tunes` (masked max if there is one)."""
    return {base: tunes[0] for base, tunes in bundled_fine_tunes().items()}


def wrap(model: torch.nn.Module, tokenizer, *, name: str, image_size, mean, std, context_length: int, count_tokens=None) -> DenseCLIP:
    """The adapter that fits `model` (open_clip ViT or ResNet, or HF CLIPModel)."""
    kwargs = dict(name=name, image_size=image_size, mean=mean, std=std, context_length=context_length, count_tokens=count_tokens)
    if hasattr(model, "vision_model") and hasattr(model, "visual_projection"):
        from eclip.models.hf_clip import HFCLIPViT

        return HFCLIPViT(model, tokenizer, **kwargs)
    visual = getattr(model, "visual", None)
    if visual is not None and hasattr(visual, "attnpool"):
        from eclip.models.open_clip_resnet import OpenClipResNet

        return OpenClipResNet(model, tokenizer, **kwargs)
    if visual is not None and hasattr(visual, "transformer") and hasattr(visual, "conv1"):
        from eclip.models.open_clip_vit import OpenClipViT

        return OpenClipViT(model, tokenizer, **kwargs)
    raise ModelLoadError(
        f"{name}: unsupported image tower {type(visual).__name__}; eclip supports open_clip ViT/ModifiedResNet and HF CLIPModel"
    )


def simple_tokenizer(context_length: int):
    """open_clip's BPE tokenizer (OpenAI CLIP's vocabulary, shipped with open_clip: offline)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    return tok, (lambda text: len(tok.encode(text)))


def _as_size(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def load_folder(path: Path, device: str | torch.device = "cpu", name: str | None = None) -> DenseCLIP:
    """An eclip model folder -> adapter (with its pooling head, when it has one)."""
    model, config = load_model_folder(path, device)
    return wrap_config(model, config, name=name or str(path))


def wrap_config(model: torch.nn.Module, config: dict, name: str) -> DenseCLIP:
    """The adapter of an open_clip CLIP described by an eclip model config (tokenizer, preprocessing, pooling head)."""
    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD

    ctx = int(config["open_clip"]["text_cfg"].get("context_length", 77))
    tok, count = simple_tokenizer(ctx)
    pre = config.get("preprocess", {})
    adapter = wrap(
        model,
        tok,
        name=name,
        image_size=_as_size(pre.get("image_size", config["open_clip"]["vision_cfg"].get("image_size", 224))),
        mean=pre.get("mean", OPENAI_MEAN),
        std=pre.get("std", OPENAI_STD),
        context_length=ctx,
        count_tokens=count,
    )
    adapter.config = config
    if config.get("pooling"):
        from eclip.models.pooling import PoolingConfig

        try:
            adapter.pooling = PoolingConfig.from_json(config["pooling"])
        except (EclipError, TypeError, ValueError) as err:
            raise ModelLoadError(f"{name}: pooling: {err}; fix the value in its {CONFIG_NAME} or re-export the model folder") from err
    return adapter


def load_hf_folder(path: Path, device: str | torch.device = "cpu") -> DenseCLIP:
    """A Hugging Face CLIPModel folder -> adapter (needs the `hf` extra); its config's sizes are checked before anything is built."""
    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD
    from eclip.models.validation import HF_RULES, check_config

    check_config(read_config(path / CONFIG_NAME), path / CONFIG_NAME, HF_RULES)
    try:
        from transformers import CLIPModel
    except ImportError as err:
        raise ModelLoadError(f"{path}: a Hugging Face CLIP folder needs transformers; run `pip install eclip[hf]`") from err
    try:
        model = CLIPModel.from_pretrained(str(path)).to(device).eval()
    except Exception as err:
        raise ModelLoadError(f"{path}: could not load as a Hugging Face CLIPModel ({err})") from err
    vcfg = model.config.vision_config
    ctx = int(model.config.text_config.max_position_embeddings)
    tokenizer, count = _hf_tokenizer(path, ctx)
    return wrap(model, tokenizer, name=str(path), image_size=_as_size(vcfg.image_size), mean=OPENAI_MEAN, std=OPENAI_STD,
                context_length=ctx, count_tokens=count)


def _hf_tokenizer(path: Path, ctx: int):
    """The folder's own tokenizer if it has one, else OpenAI CLIP's BPE (the same vocabulary)."""
    if (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file():
        from transformers import CLIPTokenizer

        hf = CLIPTokenizer.from_pretrained(str(path))

        def tokenize(texts):
            return hf(list(texts), padding="max_length", max_length=ctx, truncation=True, return_tensors="pt")["input_ids"]

        return tokenize, (lambda text: len(hf(text)["input_ids"]) - 2)
    return simple_tokenizer(ctx)


def open_clip_names() -> list[str]:
    """open_clip's model names; read from its config folder when open_clip is not imported yet (no torch import needed)."""
    if "open_clip" in sys.modules:  # then also the configs added at run time (open_clip.add_model_config)
        return sys.modules["open_clip"].list_models()
    spec = find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return sorted(p.stem for p in folder.glob("*.json"))


def _closest(name: str, known: list[str]) -> str | None:
    """The known name closest to `name` (case-insensitive), if one is close enough to be a typo of it."""
    lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.75)
    return lower[close[0]] if close else None


def check_model_name(name: str) -> None:
    """Fail now, in one line, if `name` can name no model: cheap (no torch, no network), so it can run before any work.

    A bundled name, an existing path, `hf-hub:...` and open_clip's names pass (whether they load is
    checked when they are loaded); a path-like name ("runs/model", "./x", "~/x") with nothing
    there is "no such folder"; any other name is an unknown model, with the closest known name.
    """
    if name in BUNDLED or name.startswith("hf-hub:") or Path(name).expanduser().exists():
        return
    known = open_clip_names()
    if name in known or name.replace("/", "-") in known:  # open_clip also reads "ViT-B/16" as ViT-B-16
        return
    if "/" in name or "\\" in name or name.startswith((".", "~")):
        raise ModelLoadError(f"{name}: no such folder; check the path (a model folder holds config.json and model.safetensors)")
    best = _closest(name, [*BUNDLED, *known])
    hint = f"did you mean {best}? " if best else ""
    raise ModelLoadError(
        f"unknown model {name!r}; {hint}use a bundled name ({', '.join(BUNDLED)}), an open_clip name (open_clip.list_models()), "
        "hf-hub:ORG/NAME, or a model folder"
    )


def _check_pretrained(name: str, pretrained: str) -> None:
    """A checkpoint path must exist; a tag must be one open_clip knows for `name` (with the closest one suggested)."""
    import open_clip

    if open_clip.get_pretrained_cfg(name.replace("/", "-"), pretrained) or Path(pretrained).expanduser().is_file():
        return
    if "/" in pretrained or "\\" in pretrained or Path(pretrained).suffix:
        raise ModelLoadError(f"checkpoint file {pretrained} does not exist; give an existing file or an open_clip tag")
    tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
    if not tags:
        raise ModelLoadError(f"open_clip has no pretrained weights for {name}, so pretrained={pretrained} cannot be found; "
                             "pass pretrained=FILE (a local checkpoint), or leave it out for random weights")
    best = _closest(pretrained, tags)
    hint = f"did you mean {best}? " if best else ""
    raise ModelLoadError(f"unknown pretrained tag {pretrained} for {name}; {hint}its tags are {', '.join(tags)}, "
                         "or pass pretrained=FILE (a local checkpoint)")


def load_open_clip(name: str, pretrained: str | None, device: str | torch.device = "cpu") -> DenseCLIP:
    """An open_clip model name (or hf-hub: id) with a tag or local checkpoint -> adapter.

    The name and the tag are checked first; the weights come from the local cache when it holds
    them, and a hub that cannot be reached is one line at once (`hub.local_first`).
    """
    import open_clip

    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD
    from eclip.models.hub import local_first

    if not name.startswith("hf-hub:"):
        check_model_name(name)
        if pretrained:
            _check_pretrained(name, pretrained)
    with local_first(name, None if name.startswith("hf-hub:") else pretrained):
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelLoadError(f"could not load {name}{f' with pretrained={pretrained}' if pretrained else ''} ({reason}); "
                                 "check that the file is an open_clip checkpoint of this model") from err
    model.eval()
    ctx = int(getattr(model, "context_length", 77) or 77)
    count = None
    inner = getattr(tokenizer, "encode", None)
    if callable(inner):
        count = lambda text: len(tokenizer.encode(text))  # noqa: E731
    image_size = _as_size(getattr(model.visual, "image_size", 224))
    mean = getattr(model.visual, "image_mean", None) or OPENAI_MEAN
    std = getattr(model.visual, "image_std", None) or OPENAI_STD
    label = f"{name}:{pretrained}" if pretrained else name
    return wrap(model, tokenizer, name=label, image_size=image_size, mean=mean, std=std, context_length=ctx, count_tokens=count)


def load_model(name: str = "synth-vit", pretrained: str | None = None, device: str | torch.device = "cpu") -> DenseCLIP:
    """Open any supported CLIP (see the module docstring) and return its DenseCLIP adapter."""
    from eclip.device import resolve_device

    device = resolve_device(device)
    if name in BUNDLED:
        folder = bundled_dir(name)
        if not is_model_folder(folder):
            raise ModelLoadError(f"bundled model '{name}' is not in this installation ({folder}); reinstall eclip")
        return load_folder(folder, device, name=name)
    path = Path(name).expanduser()
    if path.exists():
        if is_model_folder(path):
            return load_folder(path, device)
        config = path / CONFIG_NAME
        if path.is_dir() and config.is_file():
            data = read_config(config)
            if not isinstance(data, dict):
                raise ModelLoadError(f"{config}: is a JSON {type(data).__name__}, not an object; repair it or re-export the model folder")
            if data.get("model_type") == "clip":
                return load_hf_folder(path, device)
        raise ModelLoadError(
            f"{path}: not a model folder (expected an eclip folder with config.json + model.safetensors, "
            "or a Hugging Face CLIP folder); for an open_clip checkpoint file pass model=NAME, pretrained=FILE"
        )
    return load_open_clip(name, pretrained, device)
