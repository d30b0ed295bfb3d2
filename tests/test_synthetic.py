"""Synthetic scenes: masks are exactly the drawn pixels, seeds reproduce, datasets round-trip, bad folders say so."""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from eclip.data.synthetic import (
    BACKGROUNDS,
    CLASSNAMES,
    COLOURS,
    SceneConfig,
    SceneStream,
    SyntheticDataset,
    batch_of_scenes,
    render_scene,
    scene_seed,
    write_dataset,
    zero_shot_prompts,
)
from eclip.errors import DatasetError

FLAT = SceneConfig(texture=0.0, min_objects=3, max_objects=6)  # patterned backgrounds and clutter kept
SMALL = SceneConfig(image_size=48)


def test_flat_fills_are_exactly_the_masks():
    """With flat fills, the pixels of each object colour are exactly the visible masks of the objects of that colour.

    Backgrounds and clutter use muted tones only, so an object pixel outside its mask, a mask pixel
    painted by something else, or an occluded pixel left in a mask would all break the equality.
    """
    occluded = dropped = 0
    for seed in range(25):
        scene = render_scene(seed, FLAT)
        for name, rgb in COLOURS.items():
            painted = np.all(scene.image == np.array(rgb, dtype=np.uint8), axis=-1)
            expected = np.isin(scene.instances, [o.instance for o in scene.objects if o.colour == name])
            assert np.array_equal(painted, expected), (seed, name)
        for shape, mask in scene.class_masks.items():
            assert np.array_equal(mask, np.isin(scene.instances, [o.instance for o in scene.objects if o.shape == shape]))
        assert set(scene.class_masks) == {o.shape for o in scene.objects}
        for obj in scene.objects:
            own = scene.instances == obj.instance
            assert own.sum() == obj.visible_area >= FLAT.min_visible_fraction * obj.area
            x0, y0, x1, y1 = obj.bbox
            assert own[y0:y1, x0:x1].sum() == obj.visible_area and own[y0, x0:x1].any() and own[y1 - 1, x0:x1].any()
        assert int(scene.instances.max()) == len(scene.objects)
        occluded += sum(o.visible_area < o.area for o in scene.objects)
        dropped += scene.dropped
    assert occluded > 0 and dropped > 0  # the test did exercise occlusion and dropping


def test_texture_changes_only_masked_pixels():
    """Shading touches an object's own pixels only: same seed with and without texture differs only inside masks."""
    for seed in range(8):
        flat, textured = render_scene(seed, FLAT), render_scene(seed, dataclasses.replace(FLAT, texture=0.12))
        assert np.array_equal(flat.instances, textured.instances)
        differs = np.any(flat.image != textured.image, axis=-1)
        assert differs.any()
        assert not differs[flat.instances == 0].any()


def test_shapes_fit_in_their_disk_and_are_distinct():
    """Every shape lies inside its diameter (so none is clipped) and the rasterised classes differ from each other."""
    masks = {}
    for shape in CLASSNAMES:
        cfg = SceneConfig(shapes=(shape,), min_objects=1, max_objects=1, min_size=0.8, max_size=0.8, max_rotation=0)
        scene = render_scene(0, cfg)
        obj = scene.objects[0]
        ys, xs = np.nonzero(scene.instances)
        cx, cy = obj.center
        assert np.sqrt((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2).max() <= obj.diameter / 2
        masks[shape] = np.roll(scene.instances > 0, (int(48 - cy), int(48 - cx)), axis=(0, 1))
    for a in CLASSNAMES:
        for b in CLASSNAMES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)


def test_seeds_reproduce_and_differ():
    a, b, c = render_scene(11), render_scene(11), render_scene(12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances) and a.caption == b.caption
    assert not np.array_equal(a.image, c.image)
    images0, captions0 = batch_of_scenes(0, 0, 4, SMALL)
    images1, _ = batch_of_scenes(1, 0, 4, SMALL)
    assert not any(np.array_equal(x, y) for x in images0 for y in images1)
    tail, tail_captions = batch_of_scenes(0, 2, 2, SMALL)  # any slice of the stream is addressable
    assert np.array_equal(tail, images0[2:]) and tail_captions == captions0[2:]
    streamed = list(SceneStream(0, SMALL, start=1, count=2))
    assert np.array_equal(streamed[0].image, images0[1]) and streamed[1].caption == captions0[2]
    assert scene_seed(0, 1) != scene_seed(1, 0)
    with pytest.raises(DatasetError):
        scene_seed(-1, 0)


def test_captions_name_every_object_and_vary():
    templates, backgrounds = set(), set()
    for seed in range(60):
        scene = render_scene(seed, SMALL)
        for obj in scene.objects:
            article = "an" if obj.colour[0] in "aeiou" else "a"
            assert f"{article} {obj.colour} {obj.shape}" in scene.caption
        if "background" in scene.caption:
            assert f"{scene.background} background" in scene.caption
        templates.add(scene.caption.split(" ")[0] + str("background" in scene.caption))
        backgrounds.add(scene.background)
    assert len(templates) >= 4 and backgrounds == set(BACKGROUNDS)


def test_batch_is_fast_and_uint8():
    start = time.perf_counter()
    images, captions = batch_of_scenes(3, 0, 100)
    assert time.perf_counter() - start < 4.0  # about 0.15 s on one core; the training loader
    assert images.shape == (100, 96, 96, 3) and images.dtype == np.uint8 and len(captions) == 100


def test_prompts_and_config():
    prompts = zero_shot_prompts()
    assert list(prompts) == list(CLASSNAMES) and prompts["star"] == ["a photo of a star."]
    assert len(CLASSNAMES) == len(set(CLASSNAMES)) == 8
    cfg = SceneConfig(image_size=64, max_objects=5, backgrounds=("plain", "dotted"))
    assert SceneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ({"min_objects": 3, "max_objects": 2}, {"shapes": ("blob",)}, {"image_size": 8}):
        with pytest.raises(DatasetError):
            SceneConfig(**bad)


def test_dataset_round_trip(tmp_path):
    root = write_dataset(tmp_path / "ds", 5, seed=4, config=SMALL)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["n"] == 5 and meta["classnames"] == list(CLASSNAMES) and meta["seed"] == 4
    ds = SyntheticDataset(root)
    assert len(ds) == 5 and ds.classnames == CLASSNAMES and ds.config == SMALL
    samples = list(ds)
    assert [s.image_id for s in samples] == ["000000", "000001", "000002", "000003", "000004"] and ds.skipped == []
    for i, sample in enumerate(samples):
        scene = render_scene(scene_seed(4, i), SMALL)
        assert np.array_equal(np.asarray(sample.image), scene.image)
        assert sample.masks.keys() == scene.class_masks.keys()
        assert all(np.array_equal(sample.masks[k], scene.class_masks[k]) for k in scene.class_masks)
        assert np.array_equal(ds.instances(i), scene.instances)
        assert sample.meta["caption"] == scene.caption and len(sample.meta["objects"]) == len(scene.objects)
    assert ds[-1].image_id == "000004"
    with pytest.raises(IndexError):
        ds[5]
    write_dataset(root, 2, seed=4, config=SMALL)  # overwriting with fewer scenes leaves no stale files
    assert sorted(p.name for p in (root / "images").iterdir()) == ["000000.png", "000001.png"]


def test_broken_folders_are_reported(tmp_path):
    with pytest.raises(DatasetError, match="meta.json.*eclip synth"):
        SyntheticDataset(tmp_path)
    root = write_dataset(tmp_path / "ds", 4, seed=0, config=SMALL)
    (root / "images" / "000001.png").unlink()
    Image.fromarray(np.full((48, 48), 200, dtype=np.uint8)).save(root / "masks" / "000002.png")
    ds = SyntheticDataset(root)
    with pytest.raises(DatasetError, match="000001.png: missing file.*eclip synth"):
        ds[1]
    assert [s.image_id for s in ds] == ["000000", "000003"]
    assert [(p.parent.name, p.name) for p, _ in ds.skipped] == [("images", "000001.png"), ("masks", "000002.png")]
    assert "index 200" in ds.skipped[1][1]
    (root / "annotations.json").write_text("{not json")
    with pytest.raises(DatasetError, match="annotations.json"):
        SyntheticDataset(root)


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("file, change, named", [
    ("annotations.json", lambda d: d["images"].__setitem__(1, "000001"), "images[1] is a str, not an object"),
    ("annotations.json", lambda d: d["images"][1]["objects"][0].pop("colour"), "images[1].objects[0] has no 'colour'"),
    ("annotations.json", lambda d: d["images"][0]["objects"][0].update(shape="hexagon"), "images[0].objects[0].shape='hexagon'"),
    ("annotations.json", lambda d: d["images"][0]["objects"].__setitem__(0, 7), "images[0].objects[0] is a int"),
    ("annotations.json", lambda d: d["images"][0].update(id="../../x"), "images[0].id='../../x' is not a file name"),
    ("meta.json", lambda d: d.pop("config"), "no 'config'"),
    ("meta.json", lambda d: d.update(config=[96]), "'config': the scene config is a list"),
    ("meta.json", lambda d: d["config"].update(image_size="big"), "'config': SceneConfig field image_size='big' is not a whole number"),
    ("meta.json", lambda d: d["config"].update(texture=True), "field texture=True is not a number"),
    ("meta.json", lambda d: d["config"].update(shapes="star"), "field shapes='star' is not a list of names"),
    ("meta.json", lambda d: d.update(classnames=None), "'classnames' is not a list"),
])
def test_malformed_metadata_is_one_dataset_error_naming_the_file_and_field(tmp_path, file, change, named):
    """A damaged or hand-edited meta.json / annotations.json fails when the folder is opened, not inside an evaluation."""
    from eclip.data.phrases import SyntheticPhrases

    root = write_dataset(tmp_path / "ds", 2, seed=3, config=SceneConfig(image_size=32, min_objects=2))
    _edit(root / file, change)
    for open_folder in (SyntheticDataset, SyntheticPhrases):
        with pytest.raises(DatasetError) as caught:
            open_folder(root)
        message = str(caught.value)
        assert str(root / file) in message and named in message and "eclip synth" in message, message
        assert len(message.splitlines()) == 1


def test_writer_refuses_foreign_folders_and_interrupted_runs_read_as_incomplete(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not empty"):
        write_dataset(tmp_path / "photos", 2, config=SMALL)
    assert (tmp_path / "photos" / "holiday.jpg").exists() and not (tmp_path / "photos" / "images").exists()

    def interrupt(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ds", 3, config=SMALL, progress=interrupt)
    assert not (tmp_path / "ds" / "meta.json").exists()
    with pytest.raises(DatasetError, match="meta.json"):
        SyntheticDataset(tmp_path / "ds")
    write_dataset(tmp_path / "ds", 1, config=SMALL)  # the leftover of an interrupted run can be overwritten
    assert len(SyntheticDataset(tmp_path / "ds")) == 1


def test_cli_synth(tmp_path):
    import eclip.cli as cli  # registers the verbs

    out = tmp_path / "synth"
    result = CliRunner().invoke(cli.app, ["synth", str(out), "--n", "3", "--seed", "2", "--size", "40", "--max-objects", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 3 scenes" in result.output and str(out) in result.output
    ds = SyntheticDataset(out)
    assert len(ds) == 3 and ds.config.image_size == 40 and ds.config.max_objects == 2 and ds.meta["seed"] == 2
    assert all(s.size == (40, 40) and 1 <= len(s.meta["objects"]) <= 2 for s in ds)
