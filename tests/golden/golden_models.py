"""The two small seeded CLIPs of the golden tests: their configs, how they were made, how to load them.

The golden tests compare eclip's maps with maps computed by the authors' public code on the same
weights (`make_fixtures.py` writes those). The weights are committed (`models/*.safetensors`) so
that both sides read the very same numbers, whatever torch's random generator does in a later
release. They follow OpenAI CLIP's layout (QuickGELU, 64-wide heads, a 77-token context), which
every reference repository can rebuild from a state dict, and every bias, norm weight, batch-norm
statistic and the logit scale is perturbed away from its initial value, so that a missing bias,
norm or scale changes the maps.

The text tower keeps CLIP's 49408-token vocabulary, but only the rows of the tokens the tests use
are stored (`token_embedding.ids` / `token_embedding.rows`); every other row is zero and is never
read. That keeps the files small (a full table alone would be 6 MB).
"""
from __future__ import annotations

from pathlib import Path

import torch

MODELS = Path(__file__).parent / "models"

TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
CONFIGS = {
    # 7 blocks: CLIP Surgery and GEM rebuild the last 6, so one block stays before the parallel path
    "vit": {"embed_dim": 64, "quick_gelu": True, "text_cfg": TEXT_CFG,
            "vision_cfg": {"image_size": 48, "patch_size": 8, "width": 128, "layers": 7, "head_width": 64}},
    "resnet": {"embed_dim": 64, "quick_gelu": True, "text_cfg": TEXT_CFG,
               "vision_cfg": {"image_size": 160, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64}},
}
SEEDS = {"vit": 11, "resnet": 12}

#: The texts every golden map is computed for (their tokens are stored with the model).
TEXTS = ["a red star", "a blue circle on stripes", "grass"]

#: CLIP Surgery's prompt templates (Li et al. 2023, their `encode_text_with_prompt_ensemble`): for
#: one text their demo subtracts the ensemble of the empty text over these.
SURGERY_TEMPLATES = "surgery"


def token_strings() -> list[str]:
    """Every string the golden tests tokenise: the texts, and the templates around the empty text."""
    from eclip.prompts import resolve_templates

    return TEXTS + [t.format("") for t in resolve_templates(SURGERY_TEMPLATES)]


def build(arch: str) -> torch.nn.Module:
    """An open_clip CLIP of `arch` with random weights (not yet perturbed)."""
    from open_clip.model import CLIP

    return CLIP(**CONFIGS[arch]).eval()


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every bias, norm weight, batch-norm statistic and the logit scale off its initial value.

    open_clip starts each ResNet block's last batch-norm scale at 0, which leaves the residual
    branches dead and the last stage's features nearly constant over space (so would every map).
    """
    g = torch.Generator().manual_seed(seed)

    def noise(t: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=g) * scale

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(noise(p, 0.1))
            elif name.endswith("weight") and p.dim() == 1:  # layer / batch norm scales (bn3's start at 0: dead branches)
                p.copy_(1.0 + noise(p, 0.2))
        calibrate_batch_norm(model, g)
        pool = getattr(model.visual, "attnpool", None)
        if pool is not None:  # sharpen the pool's attention (and its v-v attention): at random init they are nearly uniform
            pool.q_proj.weight.mul_(6.0)
            pool.k_proj.weight.mul_(6.0)
            pool.v_proj.weight.mul_(10.0)
        model.logit_scale.fill_(float(torch.log(torch.tensor(23.0))))
    return model


def calibrate_batch_norm(model: torch.nn.Module, g: torch.Generator) -> None:
    """Set each batch norm's statistics to those of its inputs on a few random images, as training would.

    With its initial statistics (mean 0, variance 1) a random ResNet's activations shrink block by
    block until the last stage is constant over space up to 1e-4, and no map means anything.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batch
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    coarse = torch.randn(16, 3, 6, 6, generator=g)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic") + 0.3 * torch.randn(16, 3, size, size, generator=g)
    model.visual.train()
    model.visual(images)
    model.visual.eval()
    for m in norms:
        m.momentum = 0.1


def make(arch: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The golden model of `arch` from its seed, and the state to save (sparse token embedding, float16)."""
    from eclip.models.loading import simple_tokenizer

    torch.manual_seed(SEEDS[arch])
    model = perturb(build(arch), SEEDS[arch])
    tokenizer, _ = simple_tokenizer(TEXT_CFG["context_length"])
    ids = torch.unique(tokenizer(token_strings()))
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "token_embedding.weight"}
    table = model.token_embedding.weight.detach()
    state["token_embedding.ids"] = ids
    state["token_embedding.rows"] = table[ids].clone()
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    return model, state


def save(arch: str) -> Path:
    """Write `models/<arch>.safetensors` (run once; the file is committed)."""
    from safetensors.torch import save_file

    _, state = make(arch)
    MODELS.mkdir(exist_ok=True)
    path = MODELS / f"{arch}.safetensors"
    save_file(state, str(path))
    return path


def state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The committed weights of `arch` as a float32 state dict in OpenAI CLIP's names (full token table)."""
    from safetensors.torch import load_file

    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(MODELS / f"{arch}.safetensors")).items()}
    ids, rows = state.pop("token_embedding.ids"), state.pop("token_embedding.rows")
    table = torch.zeros(TEXT_CFG["vocab_size"], rows.shape[1])
    table[ids] = rows
    state["token_embedding.weight"] = table
    return state


def load_open_clip(arch: str) -> torch.nn.Module:
    """The golden model as an open_clip CLIP."""
    model = build(arch)
    model.load_state_dict(state_dict(arch), strict=False)
    missing = set(model.state_dict()) - set(state_dict(arch))
    if missing:
        raise RuntimeError(f"golden {arch} lacks {sorted(missing)[:3]}")
    return model.eval()


def load_adapter(arch: str):
    """The golden model behind eclip's DenseCLIP adapter (OpenAI's mean and std, 77-token context)."""
    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD
    from eclip.models.loading import simple_tokenizer, wrap

    size = CONFIGS[arch]["vision_cfg"]["image_size"]
    tokenizer, count = simple_tokenizer(TEXT_CFG["context_length"])
    return wrap(load_open_clip(arch), tokenizer, name=f"golden-{arch}", image_size=(size, size), mean=OPENAI_MEAN,
                std=OPENAI_STD, context_length=TEXT_CFG["context_length"], count_tokens=count)


def images(arch: str, batch: int = 2, seed: int = 5) -> torch.Tensor:
    """(B, 3, H, W) seeded preprocessed inputs at the model's own size (every reference's native size)."""
    size = CONFIGS[arch]["vision_cfg"]["image_size"]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


if __name__ == "__main__":  # pragma: no cover - run once to (re)make the committed weights
    for name in CONFIGS:
        print(save(name))
