"""Write the segmentation fidelity fixtures: the authors' segmentors on a fake VOC folder, as numbers.

    python tests/golden/make_segmentation_fixtures.py inputs                     # once: images, labels, weights' fingerprint
    python tests/golden/make_segmentation_fixtures.py sclip     PATH/TO/SCLIP      # mmseg 1.x, see below
    python tests/golden/make_segmentation_fixtures.py naclip    PATH/TO/NACLIP
    python tests/golden/make_segmentation_fixtures.py clearclip PATH/TO/ClearCLIP
    python tests/golden/make_segmentation_fixtures.py cliptrase PATH/TO/CLIPtrase

Fetches nothing, needs no GPU, imports nothing of eclip. Each command imports the reference
repository's own segmentor from PATH (a checkout of the authors' public repository; none of its
code is copied here) and runs it, on the CPU in float32, on the seeded ViT-B/16 of
`segmentation_model.py` and the fake VOC folder written from `fixtures/segmentation-inputs.npz`:

- SCLIP, NACLIP, ClearCLIP: mmsegmentation's own test pipeline (`LoadImageFromFile`, `Resize` with
  the repository's `configs/cfg_voc21.py` / `cfg_voc20.py` scale, `LoadAnnotations`,
  `PackSegInputs`) builds each sample from the files, the segmentor class of the repository
  (`CLIPForSegmentation`, `NACLIP`, `ClearCLIPSegmentation`), built with the config's model
  settings, runs `test_step` (its data preprocessor and its `predict`: `forward_slide`,
  PAMR, `postprocess_result`). Recorded: the predicted label map of every image, and the query
  logits `postprocess_result` received, on every 16th pixel. The model comes from the weights
  (`clip.load(path)` for SCLIP and NACLIP; for ClearCLIP, whose `create_model` downloads, their
  open_clip fork's CLIP built from the config); ClearCLIP's `predict` casts to float16, which
  runs here as float32 (the one line `inputs = inputs.half()` read as `inputs.float()`), and its
  module's import of BLIP (the `clip_type='BLIP'` branch, which needs an old transformers) is
  replaced by an empty module.
- CLIPtrase: their script's `self_clip(clip, 'VOC21' / 'VOC20', image_size=224, eps=0.7, min=3)`
  on the folder converted to their detectron2 layout (background 0 -> 255, classes 1..20 ->
  0..19, as their `prepare_voc_sem_seg.py`), the model from `clip_utils.load(path)`; recorded:
  the predictions it hands to its `scores` (`device` set to "cpu", images in sorted order).

The mmseg environment used: mmengine 0.8.4, mmsegmentation 1.1.1 and mmcv-lite 2.0.1 (the
versions the READMEs name, mmcv without its compiled ops, which no segmentor calls; `mmcv.ops`
stubbed so that mmseg imports), opencv-python-headless, scikit-learn, einops, on the same torch.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures" / "segmentation"
sys.path.insert(0, str(HERE))

import segmentation_model as seg  # noqa: E402

STEP = 16  # logits are recorded on every STEP-th pixel


def read_inputs() -> dict[str, tuple[bytes, bytes]]:
    with np.load(FIXTURES / "inputs.npz") as npz:
        return {i: (npz[f"{i}.jpg"].tobytes(), npz[f"{i}.png"].tobytes()) for i, _, _ in seg.IMAGES}


def make_inputs(_: Path | None = None) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    files = seg.make_images()
    arrays = {f"{i}.{ext}": np.frombuffer(data, np.uint8) for i, (jpg, png) in files.items() for ext, data in (("jpg", jpg), ("png", png))}
    np.savez_compressed(FIXTURES / "inputs.npz", fingerprint=seg.fingerprint(seg.build()), **arrays)
    print(f"inputs: {len(files)} images")


COMMIT: str | None = None


def commit_of(repo: Path) -> str:
    if COMMIT:
        return COMMIT
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def write(method: str, results: dict[str, dict[str, np.ndarray]], repo: Path, source: str, call: str) -> None:
    """fixtures/segmentation/<method>.npz: per variant and image, `pred` (H, W) uint8 and `logits` (Q, H/16, W/16)."""
    arrays = {f"{variant}/{image_id}/{key}": value for variant, images in results.items()
              for image_id, values in images.items() for key, value in values.items()}
    provenance = {"repository": source, "commit": commit_of(repo), "call": call, "step": STEP}
    np.savez_compressed(FIXTURES / f"{method}.npz", provenance=np.array(json.dumps(provenance)), **arrays)
    print(f"{method}: {sorted(results)} x {len(next(iter(results.values())))} images")


@contextlib.contextmanager
def inside(repo: Path):
    """Run with the repository first on the path and as the working directory (their configs use relative paths)."""
    import os

    old = os.getcwd()
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(old)


def weights_file(tmp: Path) -> Path:
    path = tmp / "vit-b16-seeded.pt"
    torch.save(seg.openai_state(seg.build()), path)
    return path


# ------------------------------------------------------------------------------------------ mmseg repositories
def run_mmseg(segmentor_class, extra: dict, variants=("voc21", "voc20")) -> dict[str, dict[str, np.ndarray]]:
    """Their config's test pipeline and segmentor on the fake VOC; predictions and the logits `postprocess_result` got."""
    import custom_datasets  # noqa: F401  (registers PascalVOC20Dataset)
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        voc = seg.write_voc(Path(tmp), read_inputs())
        for variant in variants:
            cfg = Config.fromfile(f"configs/cfg_{variant}.py")
            model_cfg = {k: v for k, v in cfg.model.items() if k != "type"}
            model_cfg.update(extra, name_path=str(Path(model_cfg["name_path"]).resolve()))
            model = segmentor_class(**model_cfg).eval()
            captured = []
            post = model.postprocess_result

            def capture(seg_logits, data_samples, post=post, captured=captured):
                captured.append(seg_logits.detach().clone())
                return post(seg_logits, data_samples)

            model.postprocess_result = capture
            dataset_cfg = dict(cfg.test_dataloader.dataset)
            dataset_cfg.update(data_root=str(voc))
            dataset = DATASETS.build(dataset_cfg)
            images = {}
            for i in range(len(dataset)):
                data = pseudo_collate([dataset[i]])
                with torch.no_grad():
                    out = model.test_step(data)[0]
                image_id = Path(out.img_path).stem
                images[image_id] = {"pred": out.pred_sem_seg.data[0].numpy().astype(np.uint8),
                                    "logits": captured[-1][0, :, ::STEP, ::STEP].float().numpy()}
            results[variant] = images
    return results


def sclip(repo: Path) -> None:
    """SCLIP (Wang et al. 2023): `CLIPForSegmentation` of `clip_segmentor.py` with configs/cfg_voc21.py and cfg_voc20.py."""
    with inside(repo), tempfile.TemporaryDirectory() as tmp:
        from clip_segmentor import CLIPForSegmentation

        path = weights_file(Path(tmp))
        results = run_mmseg(CLIPForSegmentation, {"clip_path": str(path), "device": "cpu"})
    write("sclip", results, repo, "wangf3014/SCLIP", "CLIPForSegmentation(**cfg_voc21/voc20 model).test_step")


def naclip(repo: Path) -> None:
    """NACLIP (Hajimiri et al. 2024): `NACLIP` of `naclip.py` (its defaults: reduced, naclip, std 5, PAMR 10 steps)."""
    with inside(repo), tempfile.TemporaryDirectory() as tmp:
        from naclip import NACLIP

        path = weights_file(Path(tmp))
        results = run_mmseg(NACLIP, {"clip_path": str(path), "device": "cpu"})
    write("naclip", results, repo, "sinahmr/NACLIP", "NACLIP(**cfg_voc21/voc20 model).test_step (pamr_steps=10 default)")


def clearclip(repo: Path) -> None:
    """ClearCLIP (Lan et al. 2024): `ClearCLIPSegmentation` with model_type 'ClearCLIP' (the paper's method; the
    config's base is 'vanilla', which the paper's table does not use), its fork's CLIP built from the weights."""
    import types

    # their BLIP branch (clip_type 'BLIP') needs a transformers of its time; the CLIP branch never touches it
    blip = types.ModuleType("BLIP.models.blip_retrieval")
    blip.blip_retrieval = None
    sys.modules.setdefault("BLIP.models.blip_retrieval", blip)
    with inside(repo):
        import clearclip_segmentor as module
        import open_clip  # their fork

        def create_model(*_, **__):
            model = open_clip.model.CLIP(**seg.CONFIG)
            missing, unexpected = model.load_state_dict(seg.openai_state(seg.build()), strict=False)
            assert not unexpected and all(k == "attn_mask" for k in missing), (missing, unexpected)
            return model

        module.create_model = create_model
        source = textwrap.dedent(inspect.getsource(module.ClearCLIPSegmentation.predict))
        assert "inputs = inputs.half()" in source
        scope = dict(vars(module))
        exec(compile(source.replace("inputs = inputs.half()", "inputs = inputs.float()"), "predict", "exec"), scope)
        module.ClearCLIPSegmentation.predict = scope["predict"]
        results = run_mmseg(module.ClearCLIPSegmentation,
                            {"clip_type": "CLIP", "vit_type": "ViT-B/16", "model_type": "ClearCLIP", "device": "cpu"})
    write("clearclip", results, repo, "mc-lan/ClearCLIP", "ClearCLIPSegmentation(model_type='ClearCLIP', **cfg model).test_step")


# ------------------------------------------------------------------------------------------ CLIPtrase
def cliptrase(repo: Path) -> None:
    """CLIPtrase (Shao et al. 2024): `self_clip` of `clip_self_correlation.py` at 224 px, eps 0.7, 3 samples."""
    from PIL import Image

    with inside(repo), tempfile.TemporaryDirectory() as tmp:
        import clip_self_correlation as script
        import clip_utils

        tmp = Path(tmp)
        images, labels = tmp / "images_detectron2" / "val", tmp / "annotations_detectron2" / "val"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for image_id, (jpeg, png) in read_inputs().items():
            (images / f"{image_id}.jpg").write_bytes(jpeg)
            (labels / f"{image_id}.png").write_bytes(png)
            label = np.array(Image.open(labels / f"{image_id}.png"))
            converted = np.where((label == 0) | (label == 255), 255, label.astype(np.int64) - 1).astype(np.uint8)
            Image.fromarray(converted).save(labels / f"{image_id}.png")  # their prepare_voc_sem_seg.py
        model, _ = clip_utils.load(str(weights_file(tmp)), image_size=224, device="cpu")
        script.device = "cpu"
        order = sorted(p.name for p in images.iterdir())
        script.get_image_name_list = lambda dataset, path: list(order)
        results = {}
        for variant, name in (("voc21", "VOC21"), ("voc20", "VOC20")):
            script.dataset_info[name].update(image_path=str(images), gt_path=str(labels))
            captured = {}
            script.scores = lambda gts, preds, n, captured=captured: captured.update(preds=preds) or {}
            with torch.no_grad():
                script.self_clip(model, name, image_size=224, eps=0.7, min=3)
            kept = [f for f in order if Image.open(images / f).size == (224, 224)]
            results[variant] = {Path(f).stem: {"pred": np.asarray(p, dtype=np.int64)} for f, p in zip(order, captured["preds"])
                                if f in kept}
        for values in results["voc21"].values():  # their label space -> VOC21's: classes 0..19 -> 1..20, background C -> 0
            values["pred"] = np.where(values["pred"] >= 20, 0, values["pred"] + 1)
        for per_image in results.values():  # VOC20's is theirs: classes 0..19
            for values in per_image.values():
                values["pred"] = values["pred"].astype(np.uint8)
    write("cliptrase", results, repo, "leaves162/CLIPtrase",
          "self_clip(model, 'VOC21'/'VOC20', image_size=224, eps=0.7, min=3); 224 x 224 images only (their centre crop)")


REFERENCES = {"inputs": make_inputs, "sclip": sclip, "naclip": naclip, "clearclip": clearclip, "cliptrase": cliptrase}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", choices=list(REFERENCES))
    parser.add_argument("repo", type=Path, nargs="?", help="checkout of the reference repository")
    parser.add_argument("--commit", help="the checkout's commit, recorded in the fixtures (default: git rev-parse HEAD)")
    args = parser.parse_args(argv)
    global COMMIT
    COMMIT = args.commit
    if args.reference != "inputs" and (args.repo is None or not args.repo.is_dir()):
        parser.error(f"{args.reference} needs the path of its reference repository")
    REFERENCES[args.reference](args.repo.resolve() if args.repo else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
