"""Mixed precision, gradient checkpointing and the local loss: what each changes, and what it must not."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import make_adapter, make_open_clip, random_images

import eclip.models.vit as vit
from eclip.errors import OptionError, RecipeError
from eclip.precision import autocast, grad_scaler, method_precision, resolve_precision, with_autocast
from eclip.train.grad_checkpointing import enable_grad_checkpointing
from eclip.train.losses import clip_loss, local_clip_loss


def test_precision_names_defaults_and_scaler():
    assert resolve_precision(None, "cpu", cuda_default="bf16") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(OptionError, match="'fp8'"):
        resolve_precision("fp8", "cpu")
    assert method_precision("cliptrase:k=3", "bf16") == "fp32" and method_precision("itsm", "bf16") == "bf16"
    assert grad_scaler("fp16", "cpu").is_enabled() and not grad_scaler("bf16", "cpu").is_enabled()
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bf16_towers_return_float32_close_to_fp32():
    model = make_open_clip("vit")
    images = random_images(make_adapter("vit", model=model), batch=2)
    exact = model.encode_image(images)
    inside = []
    low = with_autocast(lambda x: inside.append(model.visual.conv1(x).dtype) or model.encode_image(x), "bf16", "cpu")(images)
    assert inside == [torch.bfloat16] and low.dtype == torch.float32
    assert not torch.equal(low, exact) and torch.allclose(low, exact, atol=0.1 * float(exact.detach().abs().max()))


def _grads(adapter, images, tokens):
    model = adapter.model
    model.zero_grad()
    pooled, dense = adapter.pooled_and_dense(images)
    (dense.square().mean() + pooled.sum() + model.encode_text(tokens).square().mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_grad_checkpointing_recomputes_blocks_and_changes_no_gradient(monkeypatch):
    adapter = make_adapter("vit", model=make_open_clip("vit").train())
    images, tokens = random_images(adapter, batch=2), adapter.tokenizer(["a red star", "two blue rings"])
    plain = _grads(adapter, images, tokens)
    calls = []
    run_block = vit.run_block
    monkeypatch.setattr(vit, "run_block", lambda *a, **k: calls.append(1) or run_block(*a, **k))
    enable_grad_checkpointing(adapter.model, adapter)
    assert adapter.model.transformer.grad_checkpointing
    checkpointed = _grads(adapter, images, tokens)
    assert len(calls) == 2 * adapter.num_layers  # each block once forward, once again in the backward
    assert plain.keys() == checkpointed.keys()
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6, rtol=1e-5) for k in plain)


def _features(seed: int, n: int = 6, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_()
    txt = torch.randn(n, d, generator=g)
    txt[3] = txt[1]  # two identical captions: both count as positives
    txt = F.normalize(txt, dim=-1).requires_grad_()
    negatives = F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_()
    valid = torch.tensor([True, True, False, True, True, True])
    return img, txt, negatives, valid


def test_local_losses_of_the_ranks_add_up_to_the_global_loss_and_its_gradient():
    img, txt, negatives, valid = _features(0)
    scale = torch.tensor(7.0)
    whole = clip_loss(img, txt, scale, negatives, valid)
    whole_grads = torch.autograd.grad(whole, (img, txt, negatives))
    parts = [local_clip_loss(img, txt, scale, negatives, valid, rows=slice(a, a + 2)) for a in (0, 2, 4)]  # three ranks of two
    local = sum(parts) / 3
    local_grads = torch.autograd.grad(local, (img, txt, negatives))
    assert torch.allclose(local, whole, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(local_grads, whole_grads))


def _ddp_grads(rank: int, world: int, folder: str) -> None:
    import torch.distributed as dist

    from eclip.train.loop import average_gradients, gather_with_grad

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        adapter = make_adapter("vit", model=make_open_clip("vit", seed=2).train())
        model = adapter.model
        images = random_images(adapter, batch=8, seed=5)
        captions = ["a red star", "a blue ring", "a red star", "two hearts", "a cross", "a moon", "grey", "a green square"]
        local = slice(rank * 4, rank * 4 + 4)
        out = {}
        for name in ("global", "local"):
            model.zero_grad()
            img = gather_with_grad(F.normalize(model.encode_image(images[local]), dim=-1))
            txt = gather_with_grad(F.normalize(model.encode_text(adapter.tokenizer(captions[local])), dim=-1))
            neg = gather_with_grad(F.normalize(model.encode_image(images[local].flip(-1)), dim=-1))
            scale = model.logit_scale.exp()
            loss = clip_loss(img, txt, scale, neg) if name == "global" else local_clip_loss(img, txt, scale, neg, rows=local)
            loss.backward()
            params = [p for p in model.parameters() if p.requires_grad]
            average_gradients(params)
            out[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        if rank == 0:
            torch.save(out, f"{folder}/grads.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_local_loss_gives_the_global_gradient_on_two_gloo_processes(tmp_path):
    torch.multiprocessing.spawn(_ddp_grads, args=(2, str(tmp_path)), nprocs=2, join=True)
    grads = torch.load(tmp_path / "grads.pt")
    assert grads["global"].keys() == grads["local"].keys() and len(grads["global"]) > 10
    for name, grad in grads["global"].items():
        assert torch.allclose(grads["local"][name], grad, atol=1e-6, rtol=1e-4), name


def test_train_options_change_speed_and_memory_not_the_numbers(tmp_path):
    from helpers import TINY_VIT_CONFIG

    from eclip.data.pairs import SyntheticPairs
    from eclip.models.folder import build_open_clip
    from eclip.models.loading import simple_tokenizer
    from eclip.train.checkpoint import load_state
    from eclip.train.loop import Run, TrainSettings, train

    tok, _ = simple_tokenizer(16)

    def run(name, stop_after=None, resume=False, **options):
        torch.manual_seed(0)
        settings = TrainSettings(steps=4, batch_size=6, lr=2e-3, warmup=1, checkpoint_every=2, **options)
        run = Run(build_open_clip(TINY_VIT_CONFIG), tok, SyntheticPairs(seed=5, image_size=32, max_objects=2), settings, TINY_VIT_CONFIG)
        return train(run, tmp_path / name, progress=False, stop_after=stop_after, resume=resume).losses

    exact = run("fp32")
    assert run("ckpt", grad_checkpointing=True) == pytest.approx(exact, abs=1e-5)
    assert run("local", local_loss=True) == pytest.approx(exact, abs=1e-5)  # one process: its rows are all rows
    bf16 = run("bf16", precision="bf16")
    assert bf16[0] == pytest.approx(exact[0], abs=0.05) and bf16 != exact
    run("fp16", stop_after=2, precision="fp16")
    assert load_state(tmp_path / "fp16")["scaler"]["scale"] > 0  # the loss scale is part of the state
    assert len(run("fp16", resume=True, precision="fp16")) == 4
    with pytest.raises(RecipeError, match="settings.precision"):
        TrainSettings(precision="half")
