"""A model folder checked before anything is built or allocated: config values, then weight shapes, then weight values.

Why: a model folder's config.json says how big a network to build, and open_clip builds whatever
it is told. A vision width of 10^6 or 10^4 layers allocated until the machine gave out; a negative
patch size, a preprocessing size of 0 or a std of 0 ended in a traceback; NaN weights gave NaN maps
with exit 0. So, in this order, each failure one `ModelLoadError` line naming the file and the
field or tensor:

1. `check_config`: every value eclip or open_clip reads has its type and a range that admits every
   published CLIP (widths up to 16384, up to 256 layers, images up to 4096 px).
2. `expected_tensors` builds the network on PyTorch's `meta` device (shapes only, no memory), and
   `check_header` compares it with the safetensors header (names, shapes, dtypes) before a single
   weight is read, so the real network is built only when the file holds exactly its weights.
3. `check_values`: every floating tensor is finite.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eclip.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_WIDTH, _LAYERS, _PIXELS = 16384, 256, 4096
_FIX = "fix the value or re-export the model folder"

# (field, kind, low, high, required). Kinds: int, number (low exclusive), size (int or [h, w]),
# layers (int, or four ints for a ResNet), triple (three finite numbers, each in (low, high]), object.
_Rule = tuple[str, str, float, float, bool]

#: An eclip model folder's config.json (`folder.FORMAT`): the open_clip CLIP arguments and the preprocessing.
FOLDER_RULES: tuple[_Rule, ...] = (
    ("open_clip", "object", 0, 0, True),
    ("open_clip.embed_dim", "int", 1, _WIDTH, True),
    ("open_clip.vision_cfg", "object", 0, 0, True),
    ("open_clip.vision_cfg.image_size", "size", 1, _PIXELS, False),
    ("open_clip.vision_cfg.patch_size", "int", 1, _PIXELS, False),
    ("open_clip.vision_cfg.width", "int", 1, _WIDTH, False),
    ("open_clip.vision_cfg.layers", "layers", 1, _LAYERS, False),
    ("open_clip.vision_cfg.head_width", "int", 1, _WIDTH, False),
    ("open_clip.vision_cfg.mlp_ratio", "number", 0, 64, False),
    ("open_clip.text_cfg", "object", 0, 0, True),
    ("open_clip.text_cfg.context_length", "int", 1, 2048, False),
    ("open_clip.text_cfg.vocab_size", "int", 1, 1_000_000, False),
    ("open_clip.text_cfg.width", "int", 1, _WIDTH, False),
    ("open_clip.text_cfg.heads", "int", 1, _WIDTH, False),
    ("open_clip.text_cfg.layers", "int", 1, _LAYERS, False),
    ("open_clip.text_cfg.mlp_ratio", "number", 0, 64, False),
    ("preprocess", "object", 0, 0, False),
    ("preprocess.image_size", "size", 1, _PIXELS, False),
    ("preprocess.mean", "triple", -math.inf, math.inf, False),
    ("preprocess.std", "triple", 0, math.inf, False),
    ("pooling", "object", 0, 0, False),
)

#: A Hugging Face CLIPModel folder's config.json (the fields that size the network).
HF_RULES: tuple[_Rule, ...] = (
    ("projection_dim", "int", 1, _WIDTH, False),
    ("vision_config", "object", 0, 0, False),
    ("text_config", "object", 0, 0, False),
    *((f"{tower}.{field}", "int", 1, high, False) for tower in ("vision_config", "text_config")
      for field, high in (("hidden_size", _WIDTH), ("intermediate_size", 8 * _WIDTH), ("num_hidden_layers", _LAYERS),
                          ("num_attention_heads", _WIDTH))),
    ("vision_config.image_size", "int", 1, _PIXELS, False),
    ("vision_config.patch_size", "int", 1, _PIXELS, False),
    ("text_config.max_position_embeddings", "int", 1, 2048, False),
    ("text_config.vocab_size", "int", 1, 1_000_000, False),
)

#: Keys of an open_clip tower that load code from elsewhere (timm, transformers): not in an eclip model folder.
_FOREIGN_TOWERS = ("vision_cfg.timm_model_name", "text_cfg.hf_model_name", "text_cfg.hf_tokenizer_name")


def _fail(source: Path, field: str, problem: str) -> ModelLoadError:
    return ModelLoadError(f"{source}: {field} {problem}; {_FIX}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(value: object, kind: str, low: float, high: float) -> str | None:
    """Why `value` is not a `kind` in [low, high] (numbers: (low, high]), or None."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if kind == "object":
        return None if isinstance(value, dict) else f"is a {type(value).__name__}, not an object"
    if kind == "int":
        if not whole:
            return f"is {value!r}, not a whole number"
        return None if low <= value <= high else f"is {value}, outside {int(low)}..{int(high)}"
    if kind == "number":
        if not _is_number(value):
            return f"is {value!r}, not a finite number"
        return None if low < value <= high else f"is {value}, outside ({low:g}, {high:g}]"
    if kind in ("size", "layers") and isinstance(value, list):
        count = (2,) if kind == "size" else (4,)
        if len(value) not in count:
            return f"is {value!r}, not {'[height, width]' if kind == 'size' else 'four whole numbers (a ResNet)'}"
        return next((f"holds {problem.removeprefix('is ')}" for v in value if (problem := _problem(v, "int", low, high))), None)
    if kind in ("size", "layers"):
        return _problem(value, "int", low, high)
    if kind == "triple":
        if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)):
            return f"is {value!r}, not three finite numbers (one per colour channel)"
        return None if all(low < v <= high for v in value) else f"is {value}, and every value must be above {low:g}"
    raise ValueError(f"unknown rule kind {kind!r}")  # pragma: no cover


def check_config(config: object, source: Path, rules: tuple[_Rule, ...] = FOLDER_RULES) -> dict[str, Any]:
    """`config` (read from `source`) checked against `rules`; returns it. Raises `ModelLoadError` naming the first bad field."""
    if not isinstance(config, dict):
        raise ModelLoadError(f"{source}: is a JSON {type(config).__name__}, not an object; {_FIX}")
    for field, kind, low, high, required in rules:
        parent, _, key = field.rpartition(".")
        section = config
        for part in filter(None, parent.split(".")):
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict) or key not in section:
            if required:
                raise _fail(source, field, "is missing")
            continue
        problem = _problem(section[key], kind, low, high)
        if problem:
            raise _fail(source, field, problem)
    if rules is FOLDER_RULES:
        _check_open_clip_relations(config["open_clip"], source)
    return config


def _check_open_clip_relations(section: dict[str, Any], source: Path) -> None:
    """Relations between open_clip values that the ranges alone cannot catch."""
    vision, text = section["vision_cfg"], section["text_cfg"]
    for key in _FOREIGN_TOWERS:
        tower, name = key.split(".")
        if section[tower].get(name):
            raise _fail(source, f"open_clip.{key}", "names a tower from another library; an eclip model folder holds open_clip's "
                                                     "own ViT or ResNet towers")
    image, layers = vision.get("image_size", 224), vision.get("layers", 12)
    if isinstance(layers, int) and vision.get("patch_size", 16) > min(image if isinstance(image, list) else [image]):
        raise _fail(source, "open_clip.vision_cfg.patch_size", f"is {vision.get('patch_size', 16)}, larger than the image ({image})")
    # attention widths split into whole heads: a ViT's width // head_width heads, a ResNet pool's (32 * width) // head_width
    vision_width = vision.get("width", 768) * (1 if isinstance(layers, int) else 32)
    for field, width, heads in (("vision_cfg.head_width", vision_width, vision_width // vision.get("head_width", 64)),
                                ("text_cfg.heads", text.get("width", 512), text.get("heads", 8))):
        if heads < 1 or width % heads:
            raise _fail(source, f"open_clip.{field}", f"does not split the attention width {width} into whole heads")


def expected_tensors(build: Any) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Name -> (shape, is floating point) of every tensor of the network `build()` makes, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        network = build()
    return {name: (tuple(t.shape), t.is_floating_point()) for name, t in network.state_dict().items()}


_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


def check_header(weights: Path, expected: dict[str, tuple[tuple[int, ...], bool]], config: Path) -> None:
    """The safetensors header of `weights` (names, shapes, dtypes; no tensor read) against the `expected` network."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            header = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    except Exception as err:  # safetensors raises several types for a truncated or foreign file
        raise ModelLoadError(f"{weights}: not a readable safetensors file ({err}); re-export or re-download it") from err
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"{weights}: weights do not fit {config} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "the folder's config.json and model.safetensors come from different models: re-export the folder")
    for name, (shape, floating) in expected.items():
        stored, dtype = header[name]
        if stored != shape:
            raise ModelLoadError(
                f"{weights}: tensor {name} has shape {list(stored)} where {config} makes {list(shape)}; "
                "the folder's config.json and model.safetensors come from different models: re-export the folder")
        if floating and dtype not in _FLOAT_DTYPES:
            raise ModelLoadError(f"{weights}: tensor {name} is {dtype}, not floating point; weights are float16, bfloat16 or "
                                 "float32: re-export the model folder")


def check_values(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Every floating tensor of `state` (float32 tensors on the CPU, read from `weights`) is finite.

    numpy's single-threaded test: torch's isfinite spends most of its time in thread hand-offs on a
    busy machine (40x slower here for a 4M-parameter model).
    """
    import numpy as np

    for name, tensor in state.items():
        if tensor.is_floating_point():
            finite = np.isfinite(tensor.numpy())
            if not finite.all():
                raise ModelLoadError(f"{weights}: tensor {name} holds {int(finite.size - finite.sum())} NaN or infinite value(s); "
                                     "the model is broken: re-export it from a run whose loss stayed finite")
