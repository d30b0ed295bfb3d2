"""Each paper's segmentation protocol, per dataset, as its authors' configs set it.

Open-vocabulary segmentation papers report mIoU under settings that live in their code, not in
their text. This module writes those settings down, one `Protocol` per (method, dataset), with the
file each value comes from:

- SCLIP (Wang, Mei, Yuille 2023, arXiv 2312.01597): `clip_segmentor.py` (`CLIPForSegmentation`
  defaults: logit scale 40, probability threshold 0, 224 px windows at stride 112) and
  `configs/cfg_<dataset>.py` (the short side of mmseg's `Resize(scale=(2048, S), keep_ratio=True)`,
  and the VOC21 / Context60 / COCO-Object overrides of logit scale, `prob_thd`, `area_thd`).
- NACLIP (Hajimiri, Ben Ayed, Dolz 2024, arXiv 2404.08181): `naclip.py` (`NACLIP` defaults:
  logit scale 40, PAMR with 10 steps at dilations 8 and 16, which `test_all.sh ... on` keeps for the
  paper's numbers) and `configs/cfg_<dataset>.py` (short side; `slide_crop=0`, the whole image in
  one forward, for VOC20 and VOC21; `prob_thd` 0.1 for the three benchmarks with background).
- ClearCLIP (Lan et al. 2024, arXiv 2407.12442): `clearclip_segmentor.py` (`ClearCLIPSegmentation`
  defaults: logit scale 50, 448 px windows at stride 224, windows padded to the patch size) and
  `configs/cfg_<dataset>.py` (short side 448; `slide_crop=224` for Cityscapes; `prob_thd` 0.5,
  0.15, 0.4 for VOC21, Context60, COCO-Object); its own `configs/cls_voc20/voc21/coco_object.txt`.
- CLIPtrase (Shao, Tian, Zhao, Su 2024, arXiv 2407.08268): `clip_self_correlation.py` (the script
  behind the paper's table): the image resized to a short side of 224 (bicubic), no windows, raw
  cosines (no softmax), the background as extra queries, every DBSCAN cluster (eps 0.7, 3 samples
  at 224) voted to its most frequent query, and for VOC20 the patch logits multiplied by the class
  token's. Their script also centre-crops the image and the label to 224 x 224; eclip keeps the
  whole image and scores the label at its own size (our choice, so that every method is scored on
  the same pixels).

What every paper shares (the mmseg protocol): the image resized so that its short side is S
(long side at most 2048), sliding windows whose logits (cosines upsampled to the window) are
averaged, then upsampled to the label's size; a class scores the best of its queries after a
softmax over all queries at the logit scale; pixels below the probability threshold become
background; the prompt ensemble is CLIP's 80 ImageNet templates (`prompts/imagenet_template.py`
in all three mmseg repositories, `prompt_templates` in CLIPtrase's `configs/dataset_cfg.py`).
Any other eclip method is run with SCLIP's settings ("generic").
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from eclip.errors import DatasetError

#: eclip dataset name -> benchmark key of the protocols.
DATASET_KEYS = {"voc": "voc20", "voc21": "voc21", "context": "context59", "context60": "context60",
                "coco_object": "coco_object", "coco_stuff": "coco_stuff", "ade20k": "ade20k", "cityscapes": "cityscapes",
                "synthetic": "synthetic", "synthetic/phrases": "phrases"}

#: Benchmarks whose class 0 is a background class.
WITH_BACKGROUND = frozenset({"voc21", "context60", "coco_object", "synthetic", "phrases"})

#: The methods whose authors published a segmentation protocol; others run SCLIP's.
PAPERS = ("sclip", "clearclip", "naclip", "cliptrase")


@dataclass(frozen=True)
class Protocol:
    """How one method segments one benchmark.

    Attributes:
        names: the query file ("<set>/<benchmark>", see `vocabulary.read_names`), or None for the
            dataset's own class names (synthetic scenes: "background" first).
        templates: the prompt template set (`eclip.prompts`).
        short_side: pixels of the short side after resizing; "model" for the model's input size;
            None to keep the image as it is. The long side is capped at `max_long_side`.
        resample: "bilinear" (mmcv's `imresize`, cv2 INTER_LINEAR, on 8-bit pixels) or "bicubic"
            (torchvision's `Resize` on a PIL image, CLIPtrase).
        crop, stride: sliding windows (pixels); crop None runs the whole image in one forward.
        pad_to_patch: pad a window whose sides are not multiples of the patch size (ClearCLIP).
        logit_scale: the softmax temperature over queries (only matters with a threshold).
        prob_threshold: pixels whose best class probability is below it become background (class 0).
        area_threshold: SCLIP's VOC21 rule: a foreground class predicted on less than this share of
            the foreground pixels is dropped (its probabilities zeroed) before the argmax.
        pamr_steps, pamr_dilations: NACLIP's PAMR refinement (0 steps: off).
        cluster_vote: CLIPtrase's DBSCAN-cluster vote, with `dbscan` = (eps, min_samples).
        class_token_gate: CLIPtrase's VOC20 rule (patch logits times the class token's logits).
        pos_interpolation: how the ViT's position embedding is resized ("dino": the forks' scale
            factors, see `eclip.models.vit.interpolate_pos_embed`).
        source: the files the values come from.
    """

    names: str | None
    templates: str = "imagenet"
    short_side: int | str | None = 336
    max_long_side: int = 2048
    resample: str = "bilinear"
    crop: int | None = 224
    stride: int = 112
    pad_to_patch: bool = False
    logit_scale: float = 40.0
    prob_threshold: float = 0.0
    area_threshold: float | None = None
    pamr_steps: int = 0
    pamr_dilations: tuple[int, ...] = (8, 16)
    cluster_vote: bool = False
    dbscan: tuple[float, int] = (0.7, 3)
    class_token_gate: bool = False
    pos_interpolation: str = "dino"
    source: str = ""


_SHORT = {"sclip": {"coco_stuff": 448, "cityscapes": 560}, "naclip": {"cityscapes": 560}}


def _sclip(key: str) -> Protocol:
    p = Protocol(names=f"sclip/{key}", short_side=_SHORT["sclip"].get(key, 336),
                 source=f"SCLIP clip_segmentor.py, configs/cfg_{key}.py")
    if key == "voc21":
        return replace(p, logit_scale=65.0, prob_threshold=0.1, area_threshold=0.1)
    if key in ("context60", "coco_object"):
        return replace(p, logit_scale=50.0, prob_threshold=0.1)
    return p


def _naclip(key: str) -> Protocol:
    p = Protocol(names=f"sclip/{key}", short_side=_SHORT["naclip"].get(key, 336), pamr_steps=10,
                 source=f"NACLIP naclip.py, configs/cfg_{key}.py, test_all.sh (PAMR on)")
    if key in ("voc20", "voc21"):
        p = replace(p, crop=None)
    if key in ("voc21", "context60", "coco_object"):
        p = replace(p, prob_threshold=0.1)
    return p


def _clearclip(key: str) -> Protocol:
    own = key in ("voc20", "voc21", "coco_object")
    p = Protocol(names=f"{'clearclip' if own else 'sclip'}/{key}", short_side=448, crop=448, stride=224, pad_to_patch=True,
                 logit_scale=50.0, source=f"ClearCLIP clearclip_segmentor.py, configs/cfg_{key}.py")
    threshold = {"voc21": 0.5, "context60": 0.15, "coco_object": 0.4}
    if key in threshold:
        p = replace(p, prob_threshold=threshold[key])
    if key == "cityscapes":
        p = replace(p, crop=224)
    return p


def _cliptrase(key: str) -> Protocol:
    names = f"sclip/{key}" if key == "cityscapes" else f"cliptrase/{key}"  # their script has no Cityscapes list
    return Protocol(names=names, short_side=224, resample="bicubic", crop=None, cluster_vote=True,
                    class_token_gate=key == "voc20", source="CLIPtrase clip_self_correlation.py, configs/dataset_cfg.py")


_BUILDERS = {"sclip": _sclip, "naclip": _naclip, "clearclip": _clearclip, "cliptrase": _cliptrase}


def benchmark_key(dataset: str) -> str:
    """The protocol key of an eclip dataset name ("voc" -> "voc20")."""
    key = DATASET_KEYS.get(dataset, dataset)
    if key not in set(DATASET_KEYS.values()):
        raise DatasetError(f"dataset {dataset!r} has no segmentation benchmark; use one of {', '.join(DATASET_KEYS)}")
    return key


def protocol_for(method: str, dataset: str) -> Protocol:
    """The protocol of `method` (an eclip method name) on `dataset` (an eclip dataset name or benchmark key).

    The four papers' methods get their own; every other method SCLIP's (the shared mmseg
    protocol). On the synthetic scenes every method runs the whole scene at the model's input
    size with a "background" query and no threshold, keeping its own post-processing, with the
    templates `eclip evaluate` uses there ("a photo of a {}." for shapes, phrases verbatim).
    """
    key = benchmark_key(dataset)
    build = _BUILDERS.get(method, _sclip)
    if key in ("synthetic", "phrases"):
        base = build("voc21")
        # the templates of eclip evaluate on the scenes: the bundled models' zero-shot prompt; phrases verbatim
        return replace(base, names=None, templates="single" if key == "synthetic" else "{}", short_side="model", crop=None,
                       prob_threshold=0.0, area_threshold=None, class_token_gate=False,
                       source=f"{base.source}; scenes: whole image at the model's size, 'background' query")
    return build(key)


def protocol_for_texts(method: str, templates: str = "{}", threshold: float = 0.0, model_size: int = 224) -> Protocol:
    """The protocol of `method` for free texts on any image (`eclip explain --segment`): its paper's
    windows and post-processing as on VOC20, scaled from the papers' 224 px ViT-B/16 to a model of
    `model_size` pixels, the given templates, and pixels whose best probability is below
    `threshold` sent to the background (0: no threshold)."""
    base = _BUILDERS.get(method, _sclip)("voc20")

    def scale(pixels: int | None) -> int | None:
        return None if pixels is None else max(1, round(pixels * model_size / 224))

    return replace(base, names=None, templates=templates, prob_threshold=threshold, class_token_gate=False,
                   short_side=scale(base.short_side), crop=scale(base.crop), stride=scale(base.stride))
