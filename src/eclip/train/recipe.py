"""A fine-tune as one frozen, typed description (`FinetuneRecipe`), and the run it builds (`build_run`).

ECLIP (Li, Wang, Duan, Li 2022, arXiv 2209.07046) is a fine-tune: a contrastively trained CLIP,
its pooling head replaced by masked max pooling, trained on image-caption pairs. What defines
such a fine-tune is held here in one place, and nowhere else:
- `start`: the model it starts from (a name, a folder, an open_clip name and tag), or the
  architecture a model is trained from scratch with;
- `pooling`: the head and how its training masks are made (`eclip.models.pooling.PoolingConfig`);
- `train`: what is updated (`all`, `visual`, `last:N`);
- `data`: where the pairs come from, and for synthetic scenes their seed, size and captions;
- `settings`: steps, batch, learning rate, ... (`eclip.train.loop.TrainSettings`);
- `loss`: the loss terms (`eclip.train.losses.LossTerms`).
`eclip train`, the ablation bench and `scripts/train_bundled.py` all build runs from a recipe.
The recipe is also what a model folder records of how it was made: its config.json holds the
head in `pooling` and the rest of the recipe in `training` (`record`, `from_config`).

    from eclip.train import FinetuneRecipe, finetune
    recipe = FinetuneRecipe(pooling=PoolingConfig(head="masked_max", mask_source="similarity"),
                            loss=LossTerms(background_negatives="max"))
    finetune("synth-vit", recipe, "synthetic", "runs/my-eclip")
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from eclip.errors import RecipeError
from eclip.models.adapter import DenseCLIP
from eclip.models.pooling import PoolingConfig
from eclip.train.loop import Run, TrainResult, TrainSettings, native_image_embedder, train
from eclip.train.losses import LossTerms

DATA_KINDS = ("synthetic", "files")
#: Pixels per side of the synthetic scenes a model trained from scratch sees, unless the recipe says otherwise.
SCRATCH_IMAGE_SIZE = 96


@dataclass(frozen=True)
class Start:
    """Where a run starts: a model (`model`, with an open_clip `pretrained` tag or file), or an architecture from scratch (`config`)."""

    model: str | None = None
    pretrained: str | None = None
    config: str | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.config is None):
            raise RecipeError("`start` needs a model to fine-tune or an architecture config to train from scratch, not both or neither")
        if self.pretrained is not None and self.model is None:
            raise RecipeError("`start.pretrained` goes with a model name, not with an architecture config")


@dataclass(frozen=True)
class DataRecipe:
    """Where the image-caption pairs come from.

    Attributes:
        kind: "synthetic" (the endless seeded stream of `eclip.data.synthetic`) or "files" (`path`:
            a CSV of image_path,caption, a folder of images with .txt captions, WebDataset shards).
        path: the files, for "files".
        seed: the synthetic stream's seed (training seeds are 1000 and 1001; every other is held out).
        image_size: pixels per side of the scenes / decoded images; None: 96 from scratch, else the
            size the starting model was trained on (its own recipe), else its input size.
        max_objects: objects per synthetic scene, at most.
        captions: the synthetic caption set (`eclip.data.synthetic.CAPTION_SETS`: all, objects,
            shapes); for files, the set they were written with when known (`eclip synth --captions`).
    """

    kind: str = "synthetic"
    path: str | None = None
    seed: int | None = 1000
    image_size: int | None = None
    max_objects: int | None = 3
    captions: str | None = "all"

    def __post_init__(self) -> None:
        from eclip.data.synthetic import CAPTION_SETS

        if self.kind not in DATA_KINDS:
            raise RecipeError(f"`data.kind` {self.kind!r} is unknown; use one of {', '.join(DATA_KINDS)}")
        if (self.kind == "files") != (self.path is not None):
            raise RecipeError(f"`data.path` {self.path!r}: files need a path, the synthetic stream none")
        if self.kind == "synthetic" and (self.seed is None or self.max_objects is None or self.captions is None):
            raise RecipeError("`data` of the synthetic stream needs a seed, max_objects and captions")
        if self.captions is not None and self.captions not in CAPTION_SETS:
            raise RecipeError(f"`data.captions` {self.captions!r} is unknown; use one of {', '.join(CAPTION_SETS)}")
        for name, low in (("seed", 0), ("image_size", 16), ("max_objects", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise RecipeError(f"`data.{name}` {value} must be >= {low}")

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> DataRecipe:
        """`synthetic` or a path (CSV, folder, shards) -> a DataRecipe; `options` not None set its other fields.

        Files keep only `image_size` and `captions` (the set they were written with, if known).
        """
        given = {k: v for k, v in options.items() if v is not None}
        if spec == "synthetic":
            return cls(**given)
        return cls(kind="files", path=spec, seed=None, max_objects=None, captions=given.get("captions"),
                   image_size=given.get("image_size"))


@dataclass(frozen=True)
class FinetuneRecipe:
    """Everything that defines a fine-tune (or a training from scratch); see the module docstring."""

    start: Start | None = None
    pooling: PoolingConfig = field(default_factory=lambda: PoolingConfig(head="masked_max"))
    train: str = "all"
    data: DataRecipe = field(default_factory=DataRecipe)
    settings: TrainSettings = field(default_factory=TrainSettings)
    loss: LossTerms = field(default_factory=LossTerms)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"all|visual|last:\d+", self.train):
            raise RecipeError(f"`train` {self.train!r} is not understood; use all, visual, or last:N (e.g. last:2)")
        if self.loss.background_negatives != "none" and self.pooling.head != "masked_max":
            raise RecipeError(f"`loss.background_negatives` {self.loss.background_negatives} needs the masked_max head "
                              f"(a mask to take the background from), not {self.pooling.head}")
        if self.loss.dense_terms and self.pooling.mask_source == "none":
            name = self.loss.dense_terms[0]
            raise RecipeError(f"`loss.{name}` {getattr(self.loss, name)} needs a free-attention mask; "
                              "`pooling.mask_source` none keeps every location")

    def replace(self, **changes: Any) -> FinetuneRecipe:
        """A copy with some fields changed; a section's field as `section__field` (e.g. settings__lr=1e-4)."""
        sections: dict[str, dict[str, Any]] = {}
        top = {}
        for key, value in changes.items():
            section, _, name = key.partition("__")
            if name:
                sections.setdefault(section, {})[name] = value
            else:
                top[key] = value
        for section, values in sections.items():
            top[section] = dataclasses.replace(top.get(section, getattr(self, section)), **values)
        return dataclasses.replace(self, **top)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The whole recipe as JSON (a recipe file)."""
        return {"start": asdict(self.start) if self.start else None, "pooling": self.pooling.to_json(), "train": self.train,
                "data": asdict(self.data), "settings": asdict(self.settings), "loss": asdict(self.loss)}

    def record(self) -> dict[str, Any]:
        """The model folder's `training` record: the recipe less its head, which config.json keeps in `pooling`."""
        return {k: v for k, v in self.to_json().items() if k != "pooling"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinetuneRecipe:
        """A recipe from `to_json`'s form (unknown keys are refused, missing ones take their defaults)."""
        _check_keys(data, {f.name for f in fields(cls)}, "recipe")
        parts: dict[str, Any] = {}
        for name, kind in (("start", Start), ("data", DataRecipe), ("settings", TrainSettings), ("loss", LossTerms)):
            if data.get(name) is not None:
                _check_keys(data[name], {f.name for f in fields(kind)}, name)
                parts[name] = kind(**data[name])
        if data.get("pooling") is not None:
            parts["pooling"] = PoolingConfig.from_json(data["pooling"])
        if "train" in data:
            parts["train"] = data["train"]
        return cls(**parts)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FinetuneRecipe | None:
        """The recipe a model folder's config.json records (its `pooling` and `training`), or None when it has none."""
        training = config.get("training")
        if not training:
            return None
        if "extra" in training:
            training = _from_old_record(training)
        return cls.from_json({**training, "pooling": config.get("pooling") or {"head": "attention"}})


def _check_keys(section: Any, known: set[str], name: str) -> None:
    if not isinstance(section, dict):
        raise RecipeError(f"`{name}` must be a JSON object, not {type(section).__name__}")
    unknown = sorted(set(section) - known)
    if unknown:
        raise RecipeError(f"`{name}` has unknown keys {unknown}; the allowed keys are {sorted(known)}")


def _from_old_record(training: dict[str, Any]) -> dict[str, Any]:
    """A `training` record as eclip wrote it before recipes (settings at the top, the rest under `extra`) -> `to_json`'s form."""
    extra = training.get("extra") or {}
    data = dict(extra.get("data") or {})
    if data.get("kind") == "files":
        data.update(seed=None, max_objects=None, captions=data.get("captions"))
    settings = {f.name: training[f.name] for f in fields(TrainSettings) if f.name in training}
    return {"start": extra.get("start"), "train": extra.get("train", "all"), "data": data or None, "settings": settings,
            "loss": extra.get("loss")}


def recipe_of(model: DenseCLIP) -> FinetuneRecipe | None:
    """The recipe a loaded model was made with (from its folder's config.json), or None."""
    config = getattr(model, "config", None)
    return FinetuneRecipe.from_config(config) if config else None


def read_recipe(spec: str) -> FinetuneRecipe:
    """A recipe from a JSON file (`to_json`'s form) or from a model folder / bundled model name (its config.json)."""
    import json

    from eclip.models.folder import CONFIG_NAME
    from eclip.models.loading import BUNDLED, bundled_dir

    path = bundled_dir(spec) if spec in BUNDLED else Path(spec).expanduser()
    file = path / CONFIG_NAME if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise RecipeError(f"`recipe` {spec}: not a readable JSON recipe or model folder ({err}); give a recipe file or a model") from err
    recipe = FinetuneRecipe.from_config(data) if path.is_dir() or "format" in data else FinetuneRecipe.from_json(data)
    if recipe is None:
        raise RecipeError(f"`recipe` {spec}: the model records no training recipe; give a recipe file or another model")
    return recipe


# ---------------------------------------------------------------------- runs
def _trained_size(adapter: DenseCLIP) -> int:
    """The scene size the model was trained on (its recipe), else its input size."""
    recipe = recipe_of(adapter)
    size = recipe.data.image_size if recipe is not None else None
    return int(size or adapter.image_size[0])


def build_run(recipe: FinetuneRecipe, *, device: str | torch.device = "cpu",
              model: DenseCLIP | None = None) -> tuple[Run, FinetuneRecipe]:
    """The network, embedder, pair source and settings of `recipe`, and the recipe with its defaults resolved.

    Args:
        device: where the network lives.
        model: the loaded starting model, when the caller has it (else `recipe.start` is loaded).
    The resolved recipe (the data's image size filled in) is the output folder's `training` record.
    """
    from eclip.data.pairs import SyntheticPairs, open_pairs
    from eclip.data.synthetic import CAPTION_SETS
    from eclip.models.folder import architecture_config, build_open_clip
    from eclip.models.loading import load_model, wrap_config
    from eclip.train.parts import frozen_copy, make_embedder, model_config, trainable_filter
    from eclip.train.terms import make_terms

    start = recipe.start
    if start is None:
        raise RecipeError("`start` is missing: name the model to fine-tune or the architecture config to train from scratch")
    if start.config is not None:
        base = architecture_config(start.config)
        with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global RNG: seed it, then restore it
            torch.manual_seed(recipe.settings.seed)
            net = build_open_clip(base)
        adapter = wrap_config(net.to(device), base, name=start.config)
        size = recipe.data.image_size or SCRATCH_IMAGE_SIZE
    else:
        adapter = model if model is not None else load_model(start.model, start.pretrained, device=device)
        base = model_config(adapter, start.model, start.pretrained)
        size = recipe.data.image_size or _trained_size(adapter)
    recipe = recipe.replace(data__image_size=size)
    net = adapter.model
    arch = base.get("arch", adapter.arch)
    trainable = trainable_filter(recipe.train, net, arch)
    loss, head = recipe.loss, recipe.pooling
    dense = bool(loss.dense_terms)
    masked = head.head == "masked_max" or dense
    teacher = frozen_copy(adapter) if loss.distill or (masked and head.mask_from == "frozen") else None
    embedder = native_image_embedder if head.is_native and loss.background_negatives == "none" and not dense \
        else make_embedder(adapter, head, loss.background_negatives, masks=dense, keep_dense=dense, frozen=teacher)
    data = recipe.data
    if data.kind == "synthetic":
        source = SyntheticPairs(seed=data.seed, image_size=size, max_objects=data.max_objects,
                                caption_templates=CAPTION_SETS[data.captions])
    else:
        source = open_pairs(data.path, size, recipe.settings.seed)
    record = {**base, "pooling": recipe.pooling.to_json(), "training": recipe.record()}
    run = Run(model=net, tokenizer=adapter.tokenizer, source=source, settings=recipe.settings, record=record, embedder=embedder,
              trainable=trainable, loss=loss, terms=make_terms(loss, net, trainable, teacher, adapter.tokenizer),
              batchnorm_eval=start.model is not None and arch == "resnet")
    return run, recipe


def finetune(model: str | DenseCLIP | None, recipe: FinetuneRecipe, data: str | DataRecipe | None, out: str | Path, *,
             pretrained: str | None = None, resume: bool = False, device: str = "cpu", workers: int = 0,
             progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Fine-tune `model` by `recipe` on `data`; the model folder (and checkpoints) go to `out`.

    Args:
        model: a bundled name, a model folder, an open_clip name (with `pretrained`), or a loaded
            adapter; None takes the recipe's own `start` (e.g. an architecture from scratch).
        data: "synthetic", a CSV / folder / shards path, or a DataRecipe; None takes the recipe's.
        resume: continue the run in `out` from its last checkpoint (the recipe must be the run's).
        device: under torchrun, "cuda" gives each rank its own GPU.
        workers: DataLoader processes making the batches (the batches are the same with any number).
    Returns the run's losses and wall time; `out` then loads as a model (`eclip.models.load_model`).
    """
    from eclip.device import resolve_device
    from eclip.distributed import init_distributed, leave_distributed

    resolve_device(device)
    if isinstance(model, DenseCLIP):
        recipe = recipe.replace(start=Start(model=model.name))
    elif model is not None:
        recipe = recipe.replace(start=Start(model=model, pretrained=pretrained))
    if isinstance(data, str):
        keep = asdict(recipe.data) if recipe.data.kind == "synthetic" else {"image_size": recipe.data.image_size}
        data = DataRecipe.from_spec(data, **{k: v for k, v in keep.items() if k not in ("kind", "path")})
    if data is not None:
        recipe = recipe.replace(data=data)
    device, joined = init_distributed(device)
    try:
        run, _ = build_run(recipe, device=device, model=model if isinstance(model, DenseCLIP) else None)
        return train(run, Path(out), resume=resume, stop_after=stop_after, progress=progress, workers=workers)
    finally:
        leave_distributed(joined)
