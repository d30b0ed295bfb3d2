"""ECLIP fine-tuning: DDP equals single-process training, runs resume exactly, pair sources skip bad files."""
from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch
from helpers import TINY_VIT_CONFIG, make_adapter, make_open_clip, png_bytes_of
from test_train import ColourSquares
from typer.testing import CliRunner

from eclip.data.pairs import CsvPairs, FolderPairs, batch_part, open_pairs
from eclip.data.shard_stream import WebDatasetPairs
from eclip.errors import DatasetError, RecipeError
from eclip.models.pooling import PoolingConfig
from eclip.train.loop import Run, TrainSettings, average_gradients, gather_with_grad, to_model_input, train
from eclip.train.losses import clip_loss
from eclip.train.parts import make_embedder, trainable_filter

CONFIG = TINY_VIT_CONFIG
HEAD = PoolingConfig(head="masked_max", mask_source="cls_attention", mask_mass=0.6)
SETTINGS = dict(steps=5, batch_size=8, lr=2e-3, warmup=1, checkpoint_every=5, seed=0)


def _setup():
    """A tiny ViT to fine-tune, its ECLIP embedder (masks from a frozen copy) and toy pairs."""
    adapter = make_adapter("vit", model=make_open_clip("vit", seed=3).train())
    return adapter, make_embedder(adapter, HEAD), ColourSquares()


def _run(adapter, embedder, source, settings: TrainSettings) -> Run:
    return Run(adapter.model, adapter.tokenizer, source, settings, record={**CONFIG, "pooling": HEAD.to_json()}, embedder=embedder)


def _gradient(adapter, embedder, source, rank: int, world: int) -> dict[str, torch.Tensor]:
    """The gradient of the global-batch loss, computed from this rank's slice (as the loop does)."""
    model = adapter.model
    images, captions = batch_part(source, 0, 8, rank * 8 // world, (rank + 1) * 8 // world)
    x = to_model_input(images, (32, 32), CONFIG["preprocess"]["mean"], CONFIG["preprocess"]["std"])
    img = gather_with_grad(torch.nn.functional.normalize(embedder(model, x).pooled, dim=-1))
    txt = gather_with_grad(torch.nn.functional.normalize(model.encode_text(adapter.tokenizer(captions)), dim=-1))
    model.zero_grad()
    clip_loss(img, txt, model.logit_scale.exp()).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    average_gradients(params)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _ddp_worker(rank: int, world: int, folder: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        adapter, embedder, source = _setup()
        grads = _gradient(adapter, embedder, source, rank, world)
        result = train(_run(adapter, embedder, source, TrainSettings(**SETTINGS)), f"{folder}/ddp", progress=False)
        if rank == 0:
            torch.save({"grads": grads, "losses": result.losses, "state": adapter.model.state_dict()}, f"{folder}/ddp.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_training(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    adapter, embedder, source = _setup()
    grads = _gradient(adapter, embedder, source, 0, 1)
    assert grads.keys() == ddp["grads"].keys()
    for name, grad in grads.items():
        assert torch.allclose(ddp["grads"][name], grad, atol=1e-6, rtol=1e-4), name
    result = train(_run(adapter, embedder, source, TrainSettings(**SETTINGS)), tmp_path / "single", progress=False)
    assert result.losses == pytest.approx(ddp["losses"], abs=1e-5)
    state = adapter.model.state_dict()
    assert all(torch.allclose(state[k], ddp["state"][k], atol=1e-5) for k in state)
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["pooling"]["head"] == "masked_max"


def test_killed_eclip_run_resumes_with_the_same_next_loss(tmp_path):
    settings = TrainSettings(**{**SETTINGS, "steps": 6, "checkpoint_every": 2})

    def run(out, **kw):
        adapter, embedder, source = _setup()
        return train(_run(adapter, embedder, source, settings), out, progress=False, **kw)

    full = run(tmp_path / "full")
    part = run(tmp_path / "part", stop_after=4)
    resumed = run(tmp_path / "part", resume=True)
    assert resumed.losses[:4] == part.losses
    assert resumed.losses[4:] == pytest.approx(full.losses[4:], abs=1e-5)


def test_embedder_pools_the_masked_dense_features():
    adapter, embedder, source = _setup()
    x = to_model_input(source.batch(0, 2)[0], (32, 32), (0.5,) * 3, (0.25,) * 3)
    with torch.no_grad():
        pooled = embedder(adapter.model, x).pooled
        dense = adapter.dense(x)
        masks = embedder.masks(x)
    by_hand = torch.stack([dense[i][masks[i]].amax(dim=0) for i in range(2)])
    assert torch.allclose(pooled, by_hand) and not masks.all()


def test_trainable_filter_last_blocks():
    vit = make_open_clip("vit")
    keep = trainable_filter("last:1", vit, "vit")
    names = [n for n, _ in vit.named_parameters()]
    chosen = {n for n in names if keep(n)}
    assert "visual.proj" in chosen and "logit_scale" in chosen and "visual.ln_post.weight" in chosen
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in chosen)
    assert not any(n.startswith(("visual.transformer.resblocks.0.", "transformer.", "visual.conv1")) for n in chosen)
    rn = make_open_clip("resnet")
    rn_chosen = {n for n, _ in rn.named_parameters() if trainable_filter("last:1", rn, "resnet")(n)}
    assert any(n.startswith("visual.layer4.0.") for n in rn_chosen) and any(n.startswith("visual.attnpool.") for n in rn_chosen)
    assert not any(n.startswith("visual.layer3.") for n in rn_chosen)
    with pytest.raises(RecipeError, match="last:N"):
        trainable_filter("some", vit, "vit")
    with pytest.raises(RecipeError, match="1..2"):
        trainable_filter("last:9", vit, "vit")


def test_pair_sources_read_and_skip_bad_files(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, colour in enumerate(["red", "blue", "green"]):
        (folder / f"im{i}.png").write_bytes(png_bytes_of(colour))
        (folder / f"im{i}.txt").write_text(f"a {colour} picture\n")
    (folder / "nocaption.png").write_bytes(png_bytes_of("white"))
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "broken.txt").write_text("broken")
    pairs = FolderPairs(folder, image_size=16)
    images, captions = pairs.batch(0, 8)  # more than one epoch: every item appears, broken ones replaced
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.uint8
    assert set(captions) == {"a red picture", "a blue picture", "a green picture"}
    assert {reason.split(" ")[0] for _, reason in pairs.skipped} >= {"no"} and any("broken" in n for n, _ in pairs.skipped)
    assert torch.equal(pairs.batch(0, 8)[0], images)  # the same batch every time
    assert torch.equal(batch_part(pairs, 1, 4, 2, 4)[0], pairs.batch(1, 4)[0][2:4])

    (tmp_path / "pairs.csv").write_text("image_path,caption\nfolder/im0.png,\"red, bright\"\nfolder/missing.png,x\nfolder/im1.png,\n")
    csv_pairs = open_pairs(str(tmp_path / "pairs.csv"), 16)
    assert isinstance(csv_pairs, CsvPairs) and csv_pairs.captions == ["red, bright"] and len(csv_pairs.skipped) == 2

    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for key, data in [("a/0001.png", png_bytes_of("red")), ("a/0001.txt", b"a red one"), ("a/0002.jpg", b"bad jpeg"),
                          ("a/0002.txt", b"bad"), ("a/0003.txt", b"no image"), ("a/0004.png", png_bytes_of("blue")),
                          ("a/0004.txt", b"a blue one")]:
            info = tarfile.TarInfo(key)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    shards = open_pairs(str(tmp_path / "shard-{000..001}.tar"), 16)
    samples = shards.stream(0, 1, 2, None, True, None, 0).samples(0)
    epoch = [item for _, item in (next(samples) for _ in range(4))]  # 0001, 0002 (bad image), 0003 (no image), 0004
    assert isinstance(shards, WebDatasetPairs) and sorted(item[1] for item in epoch if item) == ["a blue one", "a red one"]
    assert sorted(n.rsplit(":", 1)[-1] for n, _ in shards.skipped) == ["a/0002", "a/0003"]
    with pytest.raises(DatasetError, match="--data"):
        open_pairs(str(tmp_path / "nothing-here"), 16)


def test_cli_fine_tunes_a_folder_model_on_shards_and_restores_the_head(tmp_path):
    import eclip.cli as cli
    from eclip.models.folder import save_model_folder
    from eclip.models.loading import load_model

    save_model_folder(tmp_path / "start", make_open_clip("vit"), CONFIG, half=True)
    with tarfile.open(tmp_path / "data.tar", "w") as tar:
        for i, colour in enumerate(["red", "blue", "green", "yellow"]):
            for name, data in [(f"{i}.png", png_bytes_of(colour)), (f"{i}.txt", f"a {colour} box".encode())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "eclip"
    result = CliRunner().invoke(cli.app, ["train", "--model", str(tmp_path / "start"), "--pooling", "masked_max",
                                          "--mask-source", "rollout", "--mask-mass", "0.5", "--train", "last:1",
                                          "--data", str(tmp_path / "data.tar"), "--steps", "2", "--batch-size", "4",
                                          "--warmup", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.rindex('{"out"'):].splitlines()[0])
    assert summary["steps"] == 2 and summary["pooling"] == "masked_max"
    model = load_model(str(out))
    assert model.pooling == PoolingConfig(head="masked_max", mask_source="rollout", mask_mass=0.5)
    start = load_model(str(tmp_path / "start"))
    frozen = [k for k in start.model.state_dict() if k.startswith("transformer.")]
    assert all(torch.equal(start.model.state_dict()[k], model.model.state_dict()[k]) for k in frozen)
