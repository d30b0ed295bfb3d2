"""Write the golden maps: run an explanation method's reference code on the golden CLIPs.

    python tests/golden/make_fixtures.py inputs                         # once: the input pixels
    python tests/golden/make_fixtures.py surgery   PATH/TO/CLIP_Surgery
    python tests/golden/make_fixtures.py gem       PATH/TO/GEM           # needs open_clip_torch<=2.23
    python tests/golden/make_fixtures.py legrad    PATH/TO/LeGrad        # needs open_clip_torch<=2.23
    python tests/golden/make_fixtures.py chefer    PATH/TO/Transformer-MM-Explainability
    python tests/golden/make_fixtures.py grad_eclip PATH/TO/Grad-Eclip   # needs OpenAI's `clip` package
    python tests/golden/make_fixtures.py sclip     PATH/TO/SCLIP
    python tests/golden/make_fixtures.py naclip    PATH/TO/NACLIP
    python tests/golden/make_fixtures.py clearclip PATH/TO/ClearCLIP     # also MaskCLIP's ViT (its MaskCLIP mode)

Fetches nothing and needs no GPU. Each command imports the reference repository's own code from
PATH (a checkout of the authors' public repository; nothing of it is copied here), rebuilds the
golden model of `golden_models.py` with it, and writes `fixtures/<case>.npz`: the reference's
maps on the dense grid, min-max normalised per map, (B, K, h, w) float32; the text embeddings its
text tower gave (K, D); and where they came from (repository, commit, call). `test_golden.py`
compares eclip's maps with them. Run it with a Python whose packages fit the reference (torch,
and for GEM and LeGrad an `open_clip_torch` of their time); eclip itself need not be installed.

Where a reference only returns maps upsampled to the image, the grid-level maps are taken before
that last step (said per reference below); references written for a GPU are run on the CPU with
the one line that moves a tensor to CUDA removed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE))

import golden_models as golden  # noqa: E402

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- shared
def pixels(arch: str) -> torch.Tensor:
    """(B, 3, H, W) uint8 input pixels of `arch` (written by `inputs`)."""
    with np.load(FIXTURES / f"inputs-{arch}.npz") as npz:
        return torch.from_numpy(npz["pixels"])


def preprocess(pix: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> CLIP's normalised float32 input (the same expression in `test_golden.py`)."""
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (pix.float() / 255.0 - mean) / std


def grid_minmax(maps: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) -> the same, min-max normalised over each map."""
    flat = maps.flatten(2)
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    return ((flat - lo) / (hi - lo)).view_as(maps)


def tokens_to_grid(sim: torch.Tensor, arch: str) -> torch.Tensor:
    """(B, h*w, K) per-location scores in raster order -> (B, K, h, w)."""
    side = int(round(sim.shape[1] ** 0.5))
    return sim.transpose(1, 2).reshape(sim.shape[0], sim.shape[2], side, side)


COMMIT: str | None = None  # --commit, for a checkout that is not a git working tree


def commit_of(repo: Path) -> str:
    if COMMIT:
        return COMMIT
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def write(case: str, maps: torch.Tensor, text_features: torch.Tensor, repo: Path, source: str, call: str) -> None:
    """fixtures/<case>.npz: maps (B, K, h, w) in [0, 1], text_features (K, D), provenance."""
    FIXTURES.mkdir(exist_ok=True)
    maps = maps.detach().float()
    assert torch.isfinite(maps).all(), f"{case}: non-finite reference maps"
    np.savez_compressed(FIXTURES / f"{case}.npz", maps=maps.numpy(), text_features=text_features.detach().float().numpy(),
                        provenance=np.array(json.dumps({"repository": source, "commit": commit_of(repo), "call": call})))
    print(f"{case}: maps {tuple(maps.shape)} from {source}")


def import_from(repo: Path) -> None:
    """Make the reference repository's own modules importable first."""
    sys.path.insert(0, str(repo))


def notebook_code(path: Path, *needles: str) -> str:
    """The source of the notebook cells that contain any of `needles`, in order."""
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells
                     if c["cell_type"] == "code" and any(n in "".join(c["source"]) for n in needles))


def openai_state(arch: str) -> dict[str, torch.Tensor]:
    """The golden weights in OpenAI CLIP's names (what `build_model(state_dict)` of every fork reads)."""
    state = golden.state_dict(arch)
    return {k: v for k, v in state.items() if k != "attn_mask"}


def open_clip_model(open_clip_module, arch: str) -> torch.nn.Module:
    """The golden model built by an `open_clip` package (the installed one or a repository's copy)."""
    model = open_clip_module.model.CLIP(**golden.CONFIGS[arch])
    missing, unexpected = model.load_state_dict(openai_state(arch), strict=False)
    assert not unexpected and all(k == "attn_mask" for k in missing), (missing, unexpected)
    return model.eval()


# ----------------------------------------------------------------------------- inputs
def make_inputs(_: Path | None = None) -> None:
    """fixtures/inputs-<arch>.npz: two seeded images per architecture as uint8 pixels at the model's size."""
    FIXTURES.mkdir(exist_ok=True)
    for arch, cfg in golden.CONFIGS.items():
        size = cfg["vision_cfg"]["image_size"]
        rng = np.random.default_rng(golden.SEEDS[arch])
        # smooth blobs plus noise: maps with structure, not only noise
        coarse = torch.from_numpy(rng.uniform(0, 255, (2, 3, 6, 6)).astype(np.float32))
        smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        pix = (smooth + torch.from_numpy(rng.normal(0, 20, (2, 3, size, size)).astype(np.float32))).clamp(0, 255).round()
        np.savez_compressed(FIXTURES / f"inputs-{arch}.npz", pixels=pix.to(torch.uint8).numpy())
        print(f"inputs-{arch}: {tuple(pix.shape)}")


# ----------------------------------------------------------------------------- references
def clip_surgery(repo: Path) -> None:
    """CLIP Surgery (Li et al. 2023): the authors' `CS-` model and `clip_feature_surgery`, as in their demo.py."""
    import_from(repo)
    import clip  # their package
    from clip.build_model import build_model

    for arch in ("vit", "resnet"):
        model = build_model("CS-golden", openai_state(arch)).eval()
        images = preprocess(pixels(arch))
        with torch.no_grad():
            features = model.encode_image(images)
            features = features / features.norm(dim=-1, keepdim=True)
            text = clip.encode_text_with_prompt_ensemble(model, golden.TEXTS, "cpu", prompt_templates=["{}"])
            side = int(round((features.shape[1] - 1) ** 0.5))
            # their feature surgery weighs the texts of one image (w.reshape(1, 1, n_t, 1)): one image per call
            sim = torch.cat([clip.clip_feature_surgery(features[b : b + 1], text) for b in range(len(features))])
            maps = clip.get_similarity_map(sim[:, 1:, :], (side, side)).permute(0, 3, 1, 2)
            write(f"surgery-{arch}", maps, text, repo, "xmed-lab/CLIP_Surgery",
                  "clip_feature_surgery(image_features, text_features); get_similarity_map at the grid size")
            redundant = clip.encode_text_with_prompt_ensemble(model, [""], "cpu")
            sim = clip.clip_feature_surgery(features, text[:1], redundant)
            maps = clip.get_similarity_map(sim[:, 1:, :], (side, side)).permute(0, 3, 1, 2)
            write(f"surgery-{arch}-single", maps, text[:1], repo, "xmed-lab/CLIP_Surgery",
                  "clip_feature_surgery(image_features, text_features, redundant_features) with the empty text's ensemble")


def gem(repo: Path) -> None:
    """GEM (Bousselham et al. 2024): `GEMWrapper` (depth 7, one iteration, adaptive temperature); the
    image-text matching of its `forward` before its upsampling."""
    import_from(repo)
    import open_clip
    from gem.gem_wrapper import GEMWrapper

    model = open_clip_model(open_clip, "vit")
    text = F.normalize(model.encode_text(open_clip.tokenize(golden.TEXTS)), dim=-1).detach()
    wrapper = GEMWrapper(model, tokenizer=None, depth=7, ss_attn_iter=1, ss_attn_temp=None)
    with torch.no_grad():
        feat_gem, _ = wrapper.model.visual(preprocess(pixels("vit")))
        image_feat = F.normalize(feat_gem, dim=-1)
        maps = tokens_to_grid(image_feat[:, 1:] @ text.T, "vit")
    write("gem-vit", wrapper.min_max(maps), text, repo, "WalBouss/GEM", "GEMWrapper(depth=7, ss_attn_iter=1).model.visual")


def legrad(repo: Path) -> None:
    """LeGrad (Bousselham et al. 2024): `LeWrapper(layer_index=-2).compute_legrad_clip`, one image at a
    time as the wrapper expects, with its `patch_size` set to 1 so that its final bilinear upsampling
    (scale factor = patch size) is the identity and the map stays on the token grid."""
    import_from(repo)
    import open_clip
    from legrad import LeWrapper

    model = open_clip_model(open_clip, "vit")
    text = F.normalize(model.encode_text(open_clip.tokenize(golden.TEXTS)), dim=-1).detach()
    wrapper = LeWrapper(model, layer_index=-2)
    wrapper.patch_size = 1
    images = preprocess(pixels("vit"))
    maps = torch.cat([wrapper.compute_legrad_clip(text, image=images[b : b + 1]).detach() for b in range(len(images))])
    write("legrad-vit", maps, text, repo, "WalBouss/LeGrad", "LeWrapper(model, layer_index=-2).compute_legrad_clip(text, image)")


def chefer(repo: Path) -> None:
    """Chefer et al. 2021: `interpret` of their CLIP notebook (`CLIP_explainability.ipynb`) on their CLIP
    fork, default start layer (-1: the last block) and start layer 0 (every block)."""
    import_from(repo)
    import CLIP.clip as clip
    from CLIP.clip.model import build_model

    scope = {}
    code = notebook_code(repo / "CLIP_explainability.ipynb", "start_layer =  -1", "def interpret")
    exec(compile("import torch\nimport numpy as np\n" + code.replace("one_hot.cuda()", "one_hot"), "interpret", "exec"), scope)
    model = build_model(openai_state("vit")).float().eval()  # as their `clip.load` does on a CPU
    tokens = clip.tokenize(golden.TEXTS)
    text = F.normalize(model.encode_text(tokens), dim=-1).detach()
    images = preprocess(pixels("vit"))
    for case, start in (("chefer-vit", -1), ("chefer-vit-all", 0)):
        rows = [scope["interpret"](image=images[b : b + 1], texts=tokens, model=model, device="cpu", start_layer=start)[1]
                for b in range(len(images))]
        maps = torch.stack(rows).detach()  # (B, K, h*w)
        side = int(round(maps.shape[-1] ** 0.5))
        write(case, grid_minmax(maps.reshape(*maps.shape[:2], side, side)), text, repo,
              "hila-chefer/Transformer-MM-Explainability", f"interpret(image, texts, model, start_layer={start})")


def grad_eclip(repo: Path) -> None:
    """Grad-ECLIP (Zhao et al. 2024): `clip_encode_dense` and `grad_eclip` of their image notebook
    (`grad_eclip_image.ipynb`) on OpenAI's CLIP, for the last block (n=1, their default) and the last
    two; `x.half()` becomes `x.float()` to run on the CPU."""
    import clip  # OpenAI's package, which their notebook installs

    model = clip.model.build_model(openai_state("vit")).float().eval()
    # the globals their first cell sets after `clip.load`
    scope = {"clipmodel": model, "clip_inres": model.visual.input_resolution, "clip_ksize": model.visual.conv1.kernel_size, "F": F}
    code = notebook_code(repo / "grad_eclip_image.ipynb", "def clip_encode_dense", "def grad_eclip")
    exec(compile("import torch\nimport math\n" + code.replace("x = x.half()", "x = x.float()"), "grad_eclip", "exec"), scope)
    text = F.normalize(model.encode_text(clip.tokenize(golden.TEXTS)), dim=-1).detach()
    images = preprocess(pixels("vit"))
    for case, n in (("grad_eclip-vit", 1), ("grad_eclip-vit-2", 2)):
        rows = []
        for b in range(len(images)):
            outputs, _, vs, qs, ks, _, outs, map_size = scope["clip_encode_dense"](images[b : b + 1], n)
            cosine = (F.normalize(outputs[:, 0], dim=-1) @ text.T)[0]
            rows.append(torch.stack([scope["grad_eclip"](c, qs, ks, vs, outs, map_size).detach() for c in cosine]))
        write(case, grid_minmax(torch.stack(rows)), text, repo, "Cyang-Zhao/Grad-Eclip",
              f"grad_eclip(c, *clip_encode_dense(image, n={n})) of grad_eclip_image.ipynb")


def _segmentor_maps(model, images: torch.Tensor, text: torch.Tensor, **encode) -> torch.Tensor:
    """What SCLIP's / NACLIP's segmentor `forward_feature` does before its upsampling."""
    with torch.no_grad():
        features = model.encode_image(images, return_all=True, **encode)
        features = features / features.norm(dim=-1, keepdim=True)
        return tokens_to_grid(features[:, 1:] @ text.T, "vit")


def sclip(repo: Path) -> None:
    """SCLIP (Wang et al. 2023): their CLIP fork's `encode_image(return_all=True, csa=True)`, as in `clip_segmentor.py`."""
    import_from(repo)
    import clip
    from clip.model import build_model

    model = build_model(openai_state("vit")).float().eval()
    text = F.normalize(model.encode_text(clip.tokenize(golden.TEXTS)), dim=-1).detach()
    maps = _segmentor_maps(model, preprocess(pixels("vit")), text, csa=True)
    write("sclip-vit", grid_minmax(maps), text, repo, "wangf3014/SCLIP", "encode_image(img, return_all=True, csa=True)")


def naclip(repo: Path) -> None:
    """NACLIP (Hajimiri et al. 2024): their CLIP fork with `set_params('reduced', 'naclip', 5.0)`, the
    defaults of `naclip.py`."""
    import_from(repo)
    import clip
    from clip.model import build_model

    model = build_model(openai_state("vit")).float().eval()
    model.visual.set_params("reduced", "naclip", 5.0)
    text = F.normalize(model.encode_text(clip.tokenize(golden.TEXTS)), dim=-1).detach()
    maps = _segmentor_maps(model, preprocess(pixels("vit")), text)
    write("naclip-vit", grid_minmax(maps), text, repo, "sinahmr/NACLIP",
          "set_params('reduced', 'naclip', 5.0); encode_image(return_all=True)")


def clearclip(repo: Path) -> None:
    """ClearCLIP (Lan et al. 2024) and its MaskCLIP mode: their open_clip fork's `encode_image(img,
    model_type, ignore_residual)`, as in `clearclip_segmentor.py`. MaskCLIP with the residual kept
    (`ignore_residual=False`: x + out_proj(v), then the FFN) is the MaskCLIP authors' ViT head
    (Zhou et al. 2022, `v += x; v = ffn(norm2(v), identity=v)`); without it, the bare value path."""
    import_from(repo)
    import open_clip  # their fork

    model = open_clip_model(open_clip, "vit")
    text = F.normalize(model.encode_text(open_clip.tokenize(golden.TEXTS)), dim=-1).detach()
    images = preprocess(pixels("vit"))
    for case, model_type, ignore_residual in (("clearclip-vit", "ClearCLIP", True), ("maskclip-vit", "MaskCLIP", False),
                                              ("maskclip-vit-bare", "MaskCLIP", True)):
        with torch.no_grad():
            features = model.encode_image(images, model_type, ignore_residual)
            features = features / features.norm(dim=-1, keepdim=True)
            maps = tokens_to_grid(features @ text.T, "vit")
        write(case, grid_minmax(maps), text, repo, "mc-lan/ClearCLIP",
              f"encode_image(img, model_type={model_type!r}, ignore_residual={ignore_residual})")


REFERENCES = {"inputs": make_inputs, "surgery": clip_surgery, "gem": gem, "legrad": legrad, "chefer": chefer,
              "grad_eclip": grad_eclip, "sclip": sclip, "naclip": naclip, "clearclip": clearclip}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", choices=list(REFERENCES))
    parser.add_argument("repo", type=Path, nargs="?", help="checkout of the reference repository")
    parser.add_argument("--commit", help="the checkout's commit, recorded in the fixtures (default: git rev-parse HEAD)")
    args = parser.parse_args(argv)
    global COMMIT
    COMMIT = args.commit
    if args.reference != "inputs" and (args.repo is None or not args.repo.is_dir()):
        parser.error(f"{args.reference} needs the path of its reference repository, e.g. PATH/TO/{args.reference}")
    torch.manual_seed(0)
    REFERENCES[args.reference](args.repo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
