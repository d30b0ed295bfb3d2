"""Explanation methods: invariants for every registered method, its options, and a by-hand check of each formula.

The invariants follow the registry: registering a method puts it under test, on both
architectures (or refused, with the reason, where it is not defined). The by-hand versions below
use open_clip's own modules (blocks, attention pool, final norm, projection) directly, not the
adapter's helpers, so they catch a wrong formula as well as wrong plumbing. All models are the
tiny seeded CLIPs of tests/helpers; the per-method formulas of the related work are checked in
test_decomposition, test_interactions, test_phrase and test_cliptrase.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import TEXT_CFG, VIT_CFG, make_adapter, make_open_clip, random_images

from eclip.errors import MethodError
from eclip.methods.base import available_methods, get_method, minmax_normalise
from eclip.methods.catalogue import ORDER
from eclip.methods.dense import DenseMethod
from eclip.methods.gradient import GradientMethod
from eclip.methods.naclip import neighbourhood_prior
from eclip.methods.options import format_value, method_options
from eclip.methods.rise import generate_masks, rise_saliency
from eclip.methods.rollout import attention_rollout
from eclip.methods.surgery import feature_surgery

ARCHS = ("vit", "resnet")
TEXTS = ["a red star", "a blue circle", "two shapes on stripes"]
#: Options that keep the slow methods quick on the tiny models (any other method runs with its defaults).
OPTIONS = {"rise": {"n_masks": 40}, "interactions": {"steps": 3}}


def family(base: type) -> list[str]:
    """The registered methods of a family (subclasses of `base`)."""
    return [name for name, cls in available_methods().items() if issubclass(cls, base)]


GRADIENT = family(GradientMethod)
DENSE = family(DenseMethod)
#: Methods that run the image encoder once for any number of texts, besides the two families.
ONE_PASS = DENSE + GRADIENT + ["surgery", "rollout", "free_attention", "decomposition", "cliptrase"]


def supported(names):
    methods = available_methods()
    return [(arch, name) for name in names for arch in ARCHS if arch in methods[name].archs]


def method(name, **extra):
    return get_method(name, **{**OPTIONS.get(name, {}), **extra})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapters():
    return {"vit": make_adapter("vit"), "resnet": make_adapter("resnet")}


def raw(adapter, name, texts=TEXTS, images=None, **extra):
    images = random_images(adapter) if images is None else images
    return method(name, **extra).explain(adapter, images, texts).raw


def split_heads(z: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, c = z.shape
    return z.reshape(b, t, heads, c // heads).transpose(1, 2)


def merge(z: torch.Tensor) -> torch.Tensor:
    b, h, t, d = z.shape
    return z.transpose(1, 2).reshape(b, t, h * d)


def qkv(block, x):
    """open_clip block -> q, k, v (B, heads, T, d) of its attention on ln_1(x)."""
    q, k, v = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    return tuple(split_heads(z, block.attn.num_heads) for z in (q, k, v))


def cos_maps(dense_tokens: torch.Tensor, adapter, texts=TEXTS) -> torch.Tensor:
    """(B, h*w, D) features -> (B, K, h, w) cosine with the texts."""
    h, w = adapter.grid_size(*adapter.image_size)
    t = adapter.encode_text(texts)
    sim = F.normalize(dense_tokens, dim=-1) @ t.T
    return sim.transpose(1, 2).reshape(sim.shape[0], len(texts), h, w)


def before_last(adapter, images):
    """Tokens entering the last block, by open_clip's own blocks."""
    x = adapter.embed(images)
    for block in adapter.model.visual.transformer.resblocks[:-1]:
        x = block(x)
    return x


def one_layer_vit():
    from open_clip.model import CLIP

    torch.manual_seed(3)
    model = CLIP(embed_dim=24, vision_cfg=dict(VIT_CFG, layers=1), text_cfg=dict(TEXT_CFG)).eval()
    return make_adapter("vit", model=model)


# ------------------------------------------------------------------ invariants, every registered method
def test_registry_lists_every_method_in_the_catalogues_order():
    methods = available_methods()
    assert list(methods) == list(ORDER), "a built-in method is registered and listed in catalogue.ORDER"
    assert list(methods)[:3] == ["itsm", "itsm_specific", "free_attention"] and ORDER.index("itsm") < ORDER.index("gradcam")
    for cls in methods.values():
        assert "arXiv" in cls.paper and cls.archs <= {"vit", "resnet"} and cls.archs
    assert methods["decomposition"].archs == {"vit"} and methods["cliptrase"].archs == {"vit"}
    assert methods["interactions"].archs == methods["phrase"].archs == {"vit", "resnet"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(available_methods()))
def test_invariants(adapters, arch, name):
    """Every method on every architecture: maps of the right shape in [0, 1], per text unless the method
    ignores the text, the model untouched; or, where the method is not defined, a refusal that says so."""
    adapter = adapters[arch]
    images = random_images(adapter, seed=1)
    cls = available_methods()[name]
    if arch not in cls.archs:
        assert cls.unsupported(adapter) is not None
        with pytest.raises(MethodError, match=f"'{name}' is not defined for {arch}"):
            method(name).explain(adapter, images, TEXTS)
        return
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    own = adapter.encode_image(images)
    maps = method(name).explain(adapter, images, TEXTS)
    h, w = images.shape[-2:]
    assert maps.scores.shape == (2, 3, h, w) and maps.raw.shape[:2] == (2, 3) and maps.texts == TEXTS
    assert torch.isfinite(maps.scores).all() and torch.isfinite(maps.raw).all()
    assert maps.scores.min() >= 0.0 and maps.scores.max() <= 1.0
    assert maps.raw.flatten(2).std(-1).gt(0).all(), "no constant map"
    if cls.uses_text:
        assert not torch.allclose(maps.raw[:, 0], maps.raw[:, 1]), "different texts, different maps"
    else:
        assert torch.equal(maps.raw[:, 0], maps.raw[:, 1]), "a text-independent map is the same for every text"
    assert all(len(per_image) == 2 for per_image in maps.extra.values()), "extras come one per image"
    assert all(torch.equal(before[k], v) for k, v in adapter.model.state_dict().items())
    assert all(p.grad is None for p in adapter.model.parameters())
    assert torch.equal(adapter.encode_image(images), own)


@pytest.mark.parametrize("name", list(available_methods()))
def test_option_specs_round_trip(name):
    """Every option, written as a spec with its default, parses back to its value; the label is canonical and parses to itself."""
    options = method_options(available_methods()[name])
    assert get_method(name).label == name
    if not options:
        return
    spec = f" {name} : " + " , ".join(f"{key} = {format_value(o.default)}" for key, o in reversed(options.items()))
    built = get_method(spec)
    assert all(getattr(built, key) == o.default for key, o in options.items())
    assert built.label == name + ":" + ",".join(f"{key}={format_value(options[key].default)}" for key in sorted(options))
    again = get_method(built.label)
    assert again.label == built.label and type(again) is type(built)
    changed = get_method(name, **OPTIONS.get(name, {}))
    assert get_method(changed.label).label == changed.label


def test_specs_parse_typed_values_and_name_what_is_wrong():
    chefer = get_method("chefer:target=cosine,start_layer=0")
    assert (chefer.target, chefer.start_layer, chefer.vmap) == ("cosine", 0, True)
    assert chefer.label == "chefer:start_layer=0,target=cosine"
    phrase = get_method("phrase:segments=[100, 150],float16_positions=false,temperature=0.02,pad=none")
    assert (phrase.segments, phrase.float16_positions, phrase.temperature, phrase.pad) == ((100, 150), False, 0.02, None)
    assert phrase.label == "phrase:float16_positions=false,pad=none,segments=[100,150],temperature=0.02"
    assert get_method("naclip:sigma=5").label == get_method("naclip:sigma=5.0").label == "naclip:sigma=5.0"
    assert get_method("chefer", start_layer=0).label == "chefer:start_layer=0"  # Python options count as given
    assert get_method("chefer:target=logit").label == "chefer:target=logit", "a default the spec names stays in the label"
    for spec, message in [("chefr", r"unknown method 'chefr' \(did you mean 'chefer'\?\); known methods: itsm, "),
                          ("chefer:start_layr=0", r"no option 'start_layr' \(did you mean 'start_layer'\?\); its options: .*start_layer"),
                          ("chefer:start_layer=first", r"option start_layer='first': expected int; e.g. chefer:start_layer=-1"),
                          ("chefer:vmap=maybe", r"option vmap='maybe': expected bool"),
                          ("gem:temperature=hot", r"option temperature='hot': expected float or none"),
                          ("phrase:segments=[1,x]", r"segments='\[1,x\]': expected list of int or none; e.g. phrase:segments=\[1,2\]"),
                          ("chefer:start_layer", r"'start_layer' is not key=value"),
                          ("chefer:start_layer=0,start_layer=1", r"'start_layer' is given twice"),
                          ("itsm_specific:softmax=true", r"no option 'softmax'; it takes no options"),
                          ("chefer:target=cos", r"unknown target 'cos'")]:
        with pytest.raises(MethodError, match=message):
            get_method(spec)
    with pytest.raises(MethodError, match="given twice"):
        get_method("chefer:start_layer=0", start_layer=1)


def test_command_line_checks_accept_specs():
    from eclip.cli.checks import check_methods

    check_methods(["itsm", "chefer:start_layer=0,target=cosine", "phrase:segments=[100,200]"])
    with pytest.raises(MethodError, match="did you mean 'target'"):
        check_methods(["itsm", "chefer:targte=cosine"])


def test_eclip_methods_lists_every_method_with_its_options():
    from typer.testing import CliRunner

    import eclip.cli as cli

    lines = CliRunner().invoke(cli.app, ["methods"]).output.splitlines()
    for name, cls in available_methods().items():
        at = next(i for i, line in enumerate(lines) if line.startswith(name + "\t"))
        assert "arXiv" in lines[at] and lines[at].split("\t")[1] == ",".join(sorted(cls.archs))
        options = method_options(cls)
        if options:
            assert lines[at + 1] == "\toptions: " + ", ".join(o.describe() for o in options.values())
    assert "\toptions: target=logit (str), text_batch=none (int or none), vmap=true (bool), start_layer=-1 (int)" in lines
    assert any("NAME:KEY=VALUE" in line for line in lines)


@pytest.mark.parametrize("arch,name", supported(ONE_PASS))
def test_one_image_forward_for_all_texts(adapters, arch, name, monkeypatch):
    """Dense (and other single-pass) methods run one forward; gradient methods one forward and one backward, for K texts."""
    adapter = adapters[arch]
    entry = "embed" if arch == "vit" else "features"
    calls = {"forward": 0, "backward": 0}
    original, grad = getattr(adapter, entry), torch.autograd.grad

    def counted_forward(*args, **kwargs):
        calls["forward"] += 1
        return original(*args, **kwargs)

    def counted_grad(*args, **kwargs):
        calls["backward"] += 1
        return grad(*args, **kwargs)

    monkeypatch.setattr(adapter, entry, counted_forward)
    monkeypatch.setattr(torch.autograd, "grad", counted_grad)
    method(name).explain(adapter, random_images(adapter), TEXTS + ["a green square", "a yellow ring"])
    assert calls["forward"] == 1
    assert calls["backward"] == (1 if name in GRADIENT else 0)


@pytest.mark.parametrize("arch,name", supported(GRADIENT + ["rise"]))
def test_batched_texts_equal_single_text_runs(adapters, arch, name):
    adapter = adapters[arch]
    images = random_images(adapter, seed=2)
    together = raw(adapter, name, images=images)
    alone = torch.cat([raw(adapter, name, texts=[t], images=images) for t in TEXTS], dim=1)
    assert torch.allclose(together, alone, atol=1e-5, rtol=1e-4)
    if name in GRADIENT:  # bounded memory: texts in chunks give the same maps
        assert torch.allclose(raw(adapter, name, images=images, text_batch=2), together, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[:, 0], together[:, 1]), "different texts give different maps"


@pytest.mark.parametrize("arch,name", supported([n for n in DENSE if n != "itsm_specific"] + ["surgery"]))
def test_dense_maps_for_k_texts_equal_one_text_at_a_time(adapters, arch, name):
    """The dense family's map of a text does not depend on the other texts (itsm_specific subtracts their mean by design)."""
    adapter = adapters[arch]
    images = random_images(adapter, seed=4)
    extra = {"remove_redundant": False} if name == "surgery" else {}  # feature surgery couples texts by design
    together = raw(adapter, name, images=images, **extra)
    alone = torch.cat([raw(adapter, name, texts=[t], images=images, **extra) for t in TEXTS], dim=1)
    assert torch.allclose(together, alone, atol=1e-5)


def test_methods_run_the_same_on_the_hugging_face_twin():
    """Only the adapter API is used: the same weights in HF CLIPModel give the same maps."""
    pytest.importorskip("transformers")
    from eclip.models.hf_convert import open_clip_to_hf

    oc = make_open_clip("vit")
    hf, ocd = make_adapter("vit", model=open_clip_to_hf(oc)), make_adapter("vit", model=oc)
    images = random_images(ocd)
    for name in [n for n, cls in available_methods().items() if "vit" in cls.archs]:
        a, b = raw(ocd, name, images=images), raw(hf, name, images=images)
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), name


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_gradient_methods_explain_the_eclip_pooling_head(arch):
    """With an ECLIP max head the explained score is the head's: maps change, stay finite."""
    from eclip.models.pooling import PoolingConfig

    adapter = make_adapter(arch)
    images = random_images(adapter)
    for name in [n for n in GRADIENT if arch in available_methods()[n].archs]:
        native = raw(adapter, name, images=images)
        adapter.pooling = PoolingConfig(head="max")
        try:
            headed = raw(adapter, name, images=images)
        finally:
            adapter.pooling = None
        assert torch.isfinite(headed).all()
        if name != "legrad":  # LeGrad scores its own mean-token embedding, whatever the head
            assert not torch.allclose(native, headed), name


# ------------------------------------------------------------------ Grad-CAM
def test_gradcam_resnet_by_hand(adapters):
    adapter = adapters["resnet"]
    images = random_images(adapter)
    feats = adapter.features(images).detach().requires_grad_(True)
    expected = []
    for t in adapter.encode_text(TEXTS):
        score = F.cosine_similarity(adapter.model.visual.attnpool(feats), t[None]).sum()
        (g,) = torch.autograd.grad(score, feats)
        expected.append(torch.relu((g.mean(dim=(2, 3), keepdim=True) * feats).sum(1)))
    expected = torch.stack(expected, 1).detach()
    assert (expected > 0).float().mean() > 0.2, "a Grad-CAM that relu zeroes everywhere would check nothing"
    assert torch.allclose(raw(adapter, "gradcam", images=images), expected, atol=1e-5)


def test_gradcam_vit_by_hand(adapters):
    """Default layer: the tokens entering the last block, weighted by their spatial-mean gradient."""
    adapter = adapters["vit"]
    visual = adapter.model.visual
    images = random_images(adapter)
    x = before_last(adapter, images).detach().requires_grad_(True)
    emb = visual.ln_post(visual.transformer.resblocks[-1](x)[:, 0]) @ visual.proj
    expected = []
    for t in adapter.encode_text(TEXTS):
        (g,) = torch.autograd.grad(F.cosine_similarity(emb, t[None]).sum(), x, retain_graph=True)
        cam = torch.relu((g[:, 1:].mean(1, keepdim=True) * x[:, 1:]).sum(-1))
        expected.append(cam.reshape(2, 4, 4))
    assert torch.allclose(raw(adapter, "gradcam", images=images), torch.stack(expected, 1).detach(), atol=1e-5)


# ------------------------------------------------------------------ Chefer
@pytest.mark.parametrize("arch,name", supported(GRADIENT))
def test_vectorised_backward_equals_the_replicated_batch(adapters, arch, name):
    """The gradient base's two ways of batching the texts give the same maps, for every target."""
    adapter = adapters[arch]
    images = random_images(adapter, seed=5)
    for target in ("cosine", "logit", "probability"):
        vmapped = raw(adapter, name, images=images, vmap=True, target=target)
        replicated = raw(adapter, name, images=images, vmap=False, target=target, text_batch=2)
        assert torch.allclose(vmapped, replicated, atol=1e-6, rtol=1e-4), target


def test_targets_scale_and_couple_the_texts_as_defined(adapters):
    """logit = logit scale x cosine, so its Grad-CAM weights scale with it (relu is positively homogeneous);
    the probability couples the texts: its map of a text depends on the other texts given."""
    adapter = adapters["vit"]
    images = random_images(adapter, seed=6)
    cosine = raw(adapter, "gradcam", images=images, target="cosine")
    assert torch.allclose(raw(adapter, "gradcam", images=images, target="logit"), adapter.logit_scale * cosine, rtol=1e-4, atol=1e-6)
    prob = raw(adapter, "gradcam", images=images, target="probability")
    alone = raw(adapter, "gradcam", texts=TEXTS[:1], images=images, target="probability")
    assert torch.allclose(raw(adapter, "gradcam", texts=TEXTS[:1], images=images, target="cosine"), cosine[:, :1], atol=1e-6)
    assert not torch.allclose(prob[:, :1], alone, atol=1e-6)  # softmax over one text is constant: no gradient
    assert alone.abs().max() < 1e-6


def test_chefer_one_block_closed_form():
    """One block, class-token pooling: R = I + mean_h relu(A * dS/dA); dS/dA[h, 0, j] = g_h . v_hj."""
    adapter = one_layer_vit()
    visual = adapter.model.visual
    block = visual.transformer.resblocks[0]
    images = random_images(adapter)
    x0 = adapter.embed(images).detach()
    q, k, v = qkv(block, x0)
    attn = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
    o = merge(attn @ v)[:, 0].detach().requires_grad_(True)  # class token's attention output (B, C)
    y = x0[:, 0] + block.attn.out_proj(o)
    emb = visual.ln_post(y + block.mlp(block.ln_2(y))) @ visual.proj
    expected = []
    for t in adapter.encode_text(TEXTS):
        (g,) = torch.autograd.grad(F.cosine_similarity(emb, t[None]).sum(), o, retain_graph=True)
        grad_attn = torch.einsum("bhd,bhjd->bhj", split_heads(g[:, None], block.attn.num_heads)[:, :, 0], v)
        expected.append(torch.relu(attn[:, :, 0, 1:] * grad_attn[:, :, 1:]).mean(1).reshape(2, 4, 4))
    expected = torch.stack(expected, 1).detach()
    # the default score is CLIP's logit (the authors' notebook), the cosine times the logit scale
    assert torch.allclose(raw(adapter, "chefer", images=images), adapter.logit_scale * expected, atol=1e-5)
    assert torch.allclose(raw(adapter, "chefer", images=images, target="cosine"), expected, atol=1e-6)


def test_chefer_over_every_block_by_hand(adapters):
    """start_layer=0 on the two-block model: R = I, then R += relu(A_l * dS/dA_l).mean_h @ R, block after block."""
    adapter = adapters["vit"]
    visual = adapter.model.visual
    images = random_images(adapter, seed=7)
    x = adapter.embed(images).detach()
    attentions = []
    for block in visual.transformer.resblocks:
        q, k, v = qkv(block, x)
        attn = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        attentions.append(attn)
        y = x + block.attn.out_proj(merge(attn @ v))
        x = y + block.mlp(block.ln_2(y))
    emb = visual.ln_post(x[:, 0]) @ visual.proj
    expected = []
    for t in adapter.encode_text(TEXTS):
        logit = adapter.logit_scale * F.cosine_similarity(emb, t[None])
        grads = torch.autograd.grad(logit.sum(), attentions, retain_graph=True)
        r = torch.eye(17).expand(2, 17, 17)
        for attn, g in zip(attentions, grads):
            r = r + torch.relu(attn * g).mean(1) @ r
        expected.append(r[:, 0, 1:].reshape(2, 4, 4))
    expected = torch.stack(expected, 1).detach()
    got = raw(adapter, "chefer", images=images, start_layer=0)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(minmax_normalise(got), minmax_normalise(raw(adapter, "chefer", images=images)), atol=1e-3)


# ------------------------------------------------------------------ rollout
def test_rollout_of_identity_and_uniform_attention_is_uniform():
    t = 17
    identity = [torch.eye(t).expand(1, 2, t, t)] * 3
    assert torch.allclose(attention_rollout(identity), torch.eye(t)[None])
    uniform = [torch.full((1, 2, t, t), 1.0 / t)] * 3
    row = attention_rollout(uniform)[0, 0, 1:]
    assert torch.allclose(row, row[0].expand_as(row))


def test_rollout_chains_blocks_first_to_last():
    """Block 1: the class token reads patch 1; block 2: patch 1 reads patch 2. Order matters."""
    t = 4
    a1, a2 = torch.eye(t), torch.eye(t)
    a1[0] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    a2[1] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    mixed = [0.5 * a + 0.5 * torch.eye(t) for a in (a1, a2)]
    expected = mixed[1] @ mixed[0]
    got = attention_rollout([a1[None, None], a2[None, None]])[0]
    assert torch.allclose(got, expected)
    assert not torch.allclose(got, mixed[0] @ mixed[1])


def test_rollout_method_uses_the_models_attention_and_ignores_text(adapters):
    adapter = adapters["vit"]
    images = random_images(adapter)
    x = adapter.embed(images)
    attentions = []
    for block in adapter.model.visual.transformer.resblocks:
        q, k, _ = qkv(block, x)
        attentions.append(torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1))
        x = block(x)
    expected = attention_rollout(attentions)[:, 0, 1:].reshape(2, 1, 4, 4)
    maps = raw(adapter, "rollout", images=images)
    assert torch.allclose(maps, expected.expand_as(maps), atol=1e-6)


# ------------------------------------------------------------------ RISE
def test_rise_with_one_all_ones_mask_is_constant(adapters):
    adapter = adapters["vit"]
    images = random_images(adapter)
    texts = adapter.encode_text(TEXTS)
    sal = rise_saliency(adapter, images, texts, torch.ones(1, *images.shape[-2:]), p=0.5)
    score = F.normalize(adapter.encode_image(images), dim=-1) @ texts.T
    assert torch.allclose(sal, (score / 0.5)[..., None, None].expand_as(sal), atol=1e-6)


def test_rise_masks_are_seeded_smooth_and_keep_p():
    a = generate_masks(200, (32, 48), cells=4, p=0.3, generator=torch.Generator().manual_seed(0))
    b = generate_masks(200, (32, 48), cells=4, p=0.3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (200, 32, 48) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and abs(float(a.mean()) - 0.3) < 0.05
    assert ((a > 0) & (a < 1)).any(), "bilinear upsampling makes soft edges"


def test_rise_does_not_depend_on_the_chunking(adapters):
    adapter = adapters["resnet"]
    images = random_images(adapter)
    assert torch.allclose(raw(adapter, "rise", images=images, batch_size=6), raw(adapter, "rise", images=images), atol=1e-6)


def test_rise_finds_the_region_the_score_depends_on():
    """A fake model whose score is the mean of the left half: saliency is higher there."""

    class LeftHalf:
        def encode_image(self, images):
            left = images[..., : images.shape[-1] // 2].mean(dim=(1, 2, 3))
            return torch.stack([left, torch.ones_like(left)], dim=-1)

    images = torch.ones(1, 3, 16, 16)
    masks = generate_masks(300, (16, 16), cells=4, p=0.5, generator=torch.Generator().manual_seed(1))
    sal = rise_saliency(LeftHalf(), images, torch.tensor([[1.0, 0.0]]), masks, p=0.5)[0, 0]
    assert sal[:, :6].mean() > sal[:, 10:].mean() + 0.05


# ------------------------------------------------------------------ MaskCLIP and the last-block variants
@pytest.mark.parametrize("residual", [True, False])
def test_maskclip_vit_is_the_value_path_by_hand(adapters, residual):
    adapter = adapters["vit"]
    visual = adapter.model.visual
    last = visual.transformer.resblocks[-1]
    images = random_images(adapter)
    x = before_last(adapter, images)
    c = x.shape[-1]
    v = F.linear(last.ln_1(x), last.attn.in_proj_weight[2 * c:], last.attn.in_proj_bias[2 * c:])
    y = last.attn.out_proj(v)
    if residual:
        y = x + y
        y = y + last.mlp(last.ln_2(y))
    expected = cos_maps(visual.ln_post(y[:, 1:]) @ visual.proj, adapter)
    got = raw(adapter, "maskclip", images=images, residual=residual, ffn=residual)
    assert torch.allclose(got, expected, atol=1e-5)


def test_maskclip_resnet_is_v_then_c_proj_at_every_location(adapters):
    adapter = adapters["resnet"]
    pool = adapter.model.visual.attnpool
    images = random_images(adapter)
    x = adapter.features(images).permute(0, 2, 3, 1)
    dense = (x @ pool.v_proj.weight.T + pool.v_proj.bias) @ pool.c_proj.weight.T + pool.c_proj.bias
    assert torch.allclose(raw(adapter, "maskclip", images=images), cos_maps(dense.flatten(1, 2), adapter), atol=1e-5)


def _softmax_self(z):
    return torch.softmax(z @ z.transpose(-2, -1) / z.shape[-1] ** 0.5, dim=-1)


def _naclip_attention(q, k, v):
    t = q.shape[-2]
    side = int(round((t - 1) ** 0.5))
    prior = torch.zeros(t, t)
    for i in range(t - 1):
        for j in range(t - 1):
            d2 = (i // side - j // side) ** 2 + (i % side - j % side) ** 2
            prior[i + 1, j + 1] = torch.exp(torch.tensor(-d2 / (2 * 5.0**2)))
    return torch.softmax(k @ k.transpose(-2, -1) / k.shape[-1] ** 0.5 + prior, dim=-1)


LAST_BLOCK = {  # name: (attention by hand, residual, ffn)
    "sclip": (lambda q, k, v: _softmax_self(q) + _softmax_self(k), True, True),
    "clearclip": (lambda q, k, v: _softmax_self(q), False, False),
    "naclip": (_naclip_attention, False, False),
}


@pytest.mark.parametrize("name", sorted(LAST_BLOCK))
def test_last_block_variants_by_hand(adapters, name):
    attention, residual, ffn = LAST_BLOCK[name]
    adapter = adapters["vit"]
    visual = adapter.model.visual
    last = visual.transformer.resblocks[-1]
    images = random_images(adapter)
    x = before_last(adapter, images)
    q, k, v = qkv(last, x)
    y = last.attn.out_proj(merge(attention(q, k, v) @ v))
    if residual:
        y = x + y
    if ffn:
        y = y + last.mlp(last.ln_2(y))
    expected = cos_maps(visual.ln_post(y[:, 1:]) @ visual.proj, adapter)
    assert torch.allclose(raw(adapter, name, images=images), expected, atol=1e-5)


def test_naclip_prior_is_a_gaussian_of_grid_distance():
    prior = neighbourhood_prior((3, 4), sigma=2.0)
    assert prior.shape == (13, 13)
    assert prior[0].abs().sum() == 0 and prior[:, 0].abs().sum() == 0
    assert torch.allclose(prior[1:, 1:].diagonal(), torch.ones(12))
    # patch (0, 0) -> patch (2, 3): squared distance 13
    assert torch.isclose(prior[1, 12], torch.exp(torch.tensor(-13 / 8.0)))


# ------------------------------------------------------------------ CLIP Surgery
def test_feature_surgery_removes_a_feature_shared_by_all_texts():
    torch.manual_seed(0)
    dense = torch.randn(2, 3, 3, 8)
    texts = torch.randn(4, 8)
    shared = 5.0 * torch.randn(8)
    class_token = torch.randn(2, 8)
    plain = feature_surgery(dense, texts, class_token, temperature=0.0)
    assert torch.allclose(feature_surgery(dense, texts + shared, class_token, temperature=0.0), plain, atol=1e-5)
    cos = torch.einsum("bhwd,kd->bkhw", F.normalize(dense, dim=-1), texts)
    cos_shared = torch.einsum("bhwd,kd->bkhw", F.normalize(dense, dim=-1), texts + shared)
    assert not torch.allclose(cos, cos_shared, atol=1e-2), "the plain cosine does see the shared feature"


def test_feature_surgery_equals_the_element_wise_form():
    """sum_c (f*t_k*w_k - mean_j f*t_j*w_j), w = softmax(2 cls.t) / mean, once per image from the class token."""
    torch.manual_seed(1)
    dense, texts, cls = torch.randn(2, 3, 3, 8), F.normalize(torch.randn(5, 8), dim=-1), torch.randn(2, 8)
    f = F.normalize(dense, dim=-1).flatten(1, 2)  # (B, N, C)
    prob = torch.softmax(2 * F.normalize(cls, dim=-1) @ texts.T, dim=-1)  # (B, K)
    w = prob / prob.mean(-1, keepdim=True)
    feats = f[:, :, None] * texts[None, None] * w[:, None, :, None]
    expected = (feats - feats.mean(2, keepdim=True)).sum(-1).transpose(1, 2).reshape(2, 5, 3, 3)
    assert torch.allclose(feature_surgery(dense, texts, cls), expected, atol=1e-5)
    # one weight per image and text: a location whose own cosines favour another text keeps the image's weights
    assert not torch.allclose(feature_surgery(dense, texts, -cls), expected, atol=1e-3)


def test_surgery_vit_dual_path_by_hand(adapters):
    """Two blocks on the parallel path: v-v attention of the *original* path's tokens, no FFN."""
    adapter = adapters["vit"]
    visual = adapter.model.visual
    images = random_images(adapter)
    x = adapter.embed(images)
    x_new = x
    for block in visual.transformer.resblocks:
        _, _, v = qkv(block, x)
        x_new = x_new + block.attn.out_proj(merge(_softmax_self(v) @ v))
        x = block(x)
    expected = cos_maps(visual.ln_post(x_new[:, 1:]) @ visual.proj, adapter)
    assert torch.allclose(raw(adapter, "surgery", images=images, depth=2, remove_redundant=False), expected, atol=1e-5)


def test_surgery_resnet_pool_by_hand(adapters):
    adapter = adapters["resnet"]
    pool = adapter.model.visual.attnpool
    images = random_images(adapter)
    x = adapter.features(images).flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(1, keepdim=True), x], dim=1) + pool.positional_embedding
    v = split_heads(pool.v_proj(x), pool.num_heads)
    dense = pool.c_proj(merge(_softmax_self(v) @ v))[:, 1:]
    assert torch.allclose(raw(adapter, "surgery", images=images, remove_redundant=False), cos_maps(dense, adapter), atol=1e-5)


def test_surgery_with_one_text_subtracts_the_empty_texts_ensemble(adapters):
    """The authors' demo: the 85-template ensemble of the empty text, each prompt normalised, averaged, renormalised."""
    adapter = adapters["resnet"]
    images = random_images(adapter)
    from eclip.methods.surgery import CLIPSurgery
    from eclip.prompts import SURGERY

    _, dense = CLIPSurgery().surgery(adapter, images)
    prompts = F.normalize(adapter.model.encode_text(adapter.tokenizer([t.format("") for t in SURGERY])), dim=-1)
    empty = F.normalize(prompts.mean(0), dim=-1)
    t = adapter.encode_text(TEXTS[:1])
    expected = torch.einsum("bhwd,kd->bkhw", F.normalize(dense, dim=-1), t - empty)
    assert torch.allclose(raw(adapter, "surgery", texts=TEXTS[:1], images=images), expected, atol=1e-5)


# ------------------------------------------------------------------ GEM
def test_gem_one_block_by_hand(adapters):
    """Last block only: (A_q + A_k + A_v) v / 3 with A_p = softmax(tau p^ p^T) after one iteration."""
    adapter = adapters["vit"]
    visual = adapter.model.visual
    last = visual.transformer.resblocks[-1]
    images = random_images(adapter)
    x = before_last(adapter, images)
    q, k, v = qkv(last, x)
    tau = last.ln_1(x).norm(dim=-1).mean(-1).view(-1, 1, 1, 1) / q.shape[-1] ** 0.5
    out = 0
    for p in (q, k, v):
        p = F.normalize(p, dim=-1)
        p = F.normalize(torch.softmax(tau * p @ p.transpose(-2, -1), -1) @ p, dim=-1)
        out = out + torch.softmax(tau * p @ p.transpose(-2, -1), -1) @ v / 3
    y = x + last.attn.out_proj(merge(out))
    expected = cos_maps(visual.ln_post(y[:, 1:]) @ visual.proj, adapter)
    assert torch.allclose(raw(adapter, "gem", images=images, depth=1), expected, atol=1e-5)


def _gem_attention(q, k, v, tau):
    out = 0
    for p in (q, k, v):
        p = F.normalize(p, dim=-1)
        p = F.normalize(torch.softmax(tau * p @ p.transpose(-2, -1), -1) @ p, dim=-1)
        out = out + torch.softmax(tau * p @ p.transpose(-2, -1), -1) @ v / 3
    return out


def test_gem_over_two_blocks_by_hand(adapters):
    """Depth 2: the parallel stream adds each block's self-self attention of the *original* path's normed tokens."""
    adapter = adapters["vit"]
    visual = adapter.model.visual
    images = random_images(adapter, seed=8)
    x = adapter.embed(images)
    x_new = x
    for block in visual.transformer.resblocks:
        q, k, v = qkv(block, x)
        tau = block.ln_1(x).norm(dim=-1).mean(-1).view(-1, 1, 1, 1) / q.shape[-1] ** 0.5
        x_new = x_new + block.attn.out_proj(merge(_gem_attention(q, k, v, tau)))
        x = block(x)
    expected = cos_maps(visual.ln_post(x_new[:, 1:]) @ visual.proj, adapter)
    got = raw(adapter, "gem", images=images, depth=2)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, raw(adapter, "gem", images=images, depth=1), atol=1e-3)


# ------------------------------------------------------------------ Grad-ECLIP
def grad_eclip_by_hand(adapter, emb, o, q, k, v, grid) -> torch.Tensor:
    """Grad-ECLIP's rule written out: H_i = relu(sum_c dcos(emb, text)/do_c(query) v_ic lambda_i),
    lambda the min-max normalised cosine of the query (token 0) with each key; (B, K, *grid)."""
    lam = F.cosine_similarity(q[:, :1], k[:, 1:], dim=-1)
    lam = (lam - lam.min(1, keepdim=True).values) / (lam.max(1, keepdim=True).values - lam.min(1, keepdim=True).values)
    expected = []
    for t in adapter.encode_text(TEXTS):
        (g,) = torch.autograd.grad(F.cosine_similarity(emb, t[None]).sum(), o, retain_graph=True)
        expected.append(torch.relu((g[:, :1] * v[:, 1:]).sum(-1) * lam).reshape(len(emb), *grid))
    return torch.stack(expected, 1).detach()


def test_grad_eclip_vit_by_hand(adapters):
    adapter = adapters["vit"]
    visual = adapter.model.visual
    last = visual.transformer.resblocks[-1]
    images = random_images(adapter)
    x = before_last(adapter, images)
    q, k, v = qkv(last, x)
    o = merge(torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, -1) @ v).detach().requires_grad_(True)
    y = x + last.attn.out_proj(o)
    emb = visual.ln_post(y + last.mlp(last.ln_2(y)))[:, 0] @ visual.proj
    expected = grad_eclip_by_hand(adapter, emb, o, merge(q), merge(k), merge(v), (4, 4))
    assert torch.allclose(raw(adapter, "grad_eclip", images=images, heads=None), expected, atol=1e-5)
    # the default recomputes the attention as one head (the authors' code): other gradients, another map
    assert not torch.allclose(raw(adapter, "grad_eclip", images=images), expected, atol=1e-4)


def test_grad_eclip_resnet_by_hand(adapters):
    """The attention pool: H_i = relu(sum_c dS/do_c(mean token) v_ic lambda_i), o the pool's attention output."""
    adapter = adapters["resnet"]
    pool = adapter.model.visual.attnpool
    images = random_images(adapter, seed=3)
    x = adapter.features(images).flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(1, keepdim=True), x], dim=1) + pool.positional_embedding
    q, k, v = pool.q_proj(x), pool.k_proj(x), pool.v_proj(x)
    o = merge(F.scaled_dot_product_attention(*(split_heads(z, pool.num_heads) for z in (q, k, v))))
    o = o.detach().requires_grad_(True)
    expected = grad_eclip_by_hand(adapter, pool.c_proj(o[:, 0]), o, q, k, v, (3, 3))
    assert (expected > 0).float().mean() > 0.2
    assert torch.allclose(raw(adapter, "grad_eclip", images=images, heads=None), expected, atol=1e-5)


# ------------------------------------------------------------------ LeGrad
def test_legrad_equals_per_layer_gradients_in_the_full_graph(adapters):
    """One backward over per-layer attention leaves == dS_l/dA_l taken layer by layer in the whole pass."""
    adapter = adapters["vit"]
    visual = adapter.model.visual
    images = random_images(adapter)
    x = adapter.embed(images).detach().requires_grad_(True)
    attentions, scores = [], []
    for block in visual.transformer.resblocks:
        q, k, v = qkv(block, x)
        attn = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, -1)
        y = x + block.attn.out_proj(merge(attn @ v))
        x = y + block.mlp(block.ln_2(y))
        attentions.append(attn)
        scores.append(visual.ln_post(x.mean(1)) @ visual.proj)
    expected = []
    for t in adapter.encode_text(TEXTS):
        total = 0
        for attn, emb in zip(attentions, scores):
            (g,) = torch.autograd.grad(F.cosine_similarity(emb, t[None]).sum(), attn, retain_graph=True)
            total = total + torch.relu(g).mean(1).mean(1)[:, 1:]
        expected.append(total.reshape(2, 4, 4))
    got = raw(adapter, "legrad", images=images, layer_index=0)
    assert torch.allclose(got, torch.stack(expected, 1), atol=1e-6)
