"""Convert an open_clip ViT CLIP into a Hugging Face `CLIPModel` with the same weights.

Used to check that both adapters compute the same maps for the same network, and useful to users
who want to hand an eclip-trained model to HF tooling. Only plain CLIP ViTs (class-token pooling,
GELU or QuickGELU, no layer scale) have an HF twin.
"""
from __future__ import annotations

import torch

from eclip.errors import ModelLoadError


def _split_in_proj(prefix: str, block_prefix: str, sd: dict, out: dict) -> None:
    w = sd[f"{block_prefix}.attn.in_proj_weight"]
    b = sd[f"{block_prefix}.attn.in_proj_bias"]
    for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3), b.chunk(3)):
        out[f"{prefix}.self_attn.{name}.weight"] = wi
        out[f"{prefix}.self_attn.{name}.bias"] = bi


def _block(prefix: str, block_prefix: str, sd: dict, out: dict) -> None:
    _split_in_proj(prefix, block_prefix, sd, out)
    pairs = {
        "self_attn.out_proj": "attn.out_proj",
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    for hf, oc in pairs.items():
        for p in ("weight", "bias"):
            out[f"{prefix}.{hf}.{p}"] = sd[f"{block_prefix}.{oc}.{p}"]


def open_clip_to_hf(model: torch.nn.Module, quick_gelu: bool = False):
    """An HF CLIPModel computing the same functions as the open_clip ViT CLIP `model`."""
    from transformers import CLIPConfig, CLIPModel

    visual = model.visual
    if not hasattr(visual, "transformer"):
        raise ModelLoadError("only open_clip ViT models have a Hugging Face CLIPModel twin")
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vw = visual.transformer.width
    tw = model.transformer.width
    patch = visual.conv1.kernel_size[0]
    grid = int(round((visual.positional_embedding.shape[0] - 1) ** 0.5))
    act = "quick_gelu" if quick_gelu else "gelu"
    config = CLIPConfig(
        text_config=dict(
            vocab_size=model.vocab_size, hidden_size=tw, intermediate_size=model.transformer.resblocks[0].mlp.c_fc.out_features,
            num_hidden_layers=len(model.transformer.resblocks), num_attention_heads=model.transformer.resblocks[0].attn.num_heads,
            max_position_embeddings=model.context_length, hidden_act=act, layer_norm_eps=1e-5,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=vw, intermediate_size=visual.transformer.resblocks[0].mlp.c_fc.out_features,
            num_hidden_layers=len(visual.transformer.resblocks), num_attention_heads=visual.transformer.resblocks[0].attn.num_heads,
            image_size=grid * patch, patch_size=patch, hidden_act=act, layer_norm_eps=1e-5,
        ),
        projection_dim=visual.proj.shape[1],
    )
    hf = CLIPModel(config)
    out: dict[str, torch.Tensor] = {}
    out["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    for i in range(len(model.transformer.resblocks)):
        _block(f"text_model.encoder.layers.{i}", f"transformer.resblocks.{i}", sd, out)
    out["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    out["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    out["text_projection.weight"] = sd["text_projection"].T
    out["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    out["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    out["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    out["vision_model.pre_layrnorm.weight"] = sd["visual.ln_pre.weight"]
    out["vision_model.pre_layrnorm.bias"] = sd["visual.ln_pre.bias"]
    for i in range(len(visual.transformer.resblocks)):
        _block(f"vision_model.encoder.layers.{i}", f"visual.transformer.resblocks.{i}", sd, out)
    out["vision_model.post_layernorm.weight"] = sd["visual.ln_post.weight"]
    out["vision_model.post_layernorm.bias"] = sd["visual.ln_post.bias"]
    out["visual_projection.weight"] = sd["visual.proj"].T
    out["logit_scale"] = sd["logit_scale"]
    missing, unexpected = hf.load_state_dict(out, strict=False)
    missing = [m for m in missing if "position_ids" not in m]
    if missing or unexpected:
        raise ModelLoadError(f"open_clip -> HF conversion left {missing[:3]} missing and {unexpected[:3]} unexpected")
    return hf.eval()
