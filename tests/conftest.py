"""Fixtures over the tiny, seeded CLIPs of `helpers`: every test runs offline in seconds."""
from __future__ import annotations

import pytest
import torch
from helpers import TINY_VIT_CONFIG, make_adapter, make_open_clip


@pytest.fixture(params=["vit", "resnet"])
def adapter(request):
    """A tiny adapter of each architecture."""
    return make_adapter(request.param)


@pytest.fixture
def vit_adapter():
    return make_adapter("vit")


@pytest.fixture
def rn_adapter():
    return make_adapter("resnet")


@pytest.fixture
def model_dir(tmp_path):
    """The tiny ViT saved as an eclip model folder (what `--model PATH` loads)."""
    from eclip.models.folder import save_model_folder

    return save_model_folder(tmp_path / "tiny", make_open_clip("vit"), TINY_VIT_CONFIG)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster than two contending ones on a shared machine.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")` or an autouse wrapper."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
