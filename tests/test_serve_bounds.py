"""`eclip serve` holds its memory and disk: quotas with small limits, the request limits, the bounded text cache, the port."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import torch
from helpers import make_adapter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import eclip.cli as cli
from eclip.errors import MethodError, OptionError, OutputError, TextInputError
from eclip.serve import TEMPLATE_CHOICES, ServeLimits, check_request_size, parse_methods, resolve_template
from eclip.serve.uploads import MULTIPART_SLACK, BodyLimit
from eclip.serve.workspace import Quotas, Workspace, tree_size

KNOWN = ["itsm", "gradcam", "rise"]


@pytest.fixture
def workspace(tmp_path):
    space = Workspace(Quotas(requests_bytes=10_000, gradio_bytes=1_000, gradio_files=4, keep=3), root=tmp_path / "root")
    yield space
    space.close()


def finished(space: Workspace, size: int, reserve: int | None = None):
    folder = space.new_folder(size if reserve is None else reserve)
    (folder / "maps.npy").write_bytes(b"x" * size)
    space.settle(folder)
    return folder


def test_request_folders_stay_under_the_quota_oldest_removed_first(workspace):
    folders = [finished(workspace, 3000) for _ in range(3)]
    assert tree_size(workspace.requests) == 9000
    newest = finished(workspace, 3000)  # 12000 would be over 10000: the oldest goes
    assert not folders[0].exists() and all(f.exists() for f in folders[1:]) and newest.exists()
    assert workspace.folder(folders[0].name) is None and workspace.folder(newest.name) == newest
    for _ in range(10):
        finished(workspace, 2500)
        assert tree_size(workspace.requests) <= workspace.quotas.requests_bytes
        assert len(list(workspace.requests.iterdir())) <= workspace.quotas.keep


def test_a_reservation_counts_until_the_folder_is_settled_and_running_requests_are_never_removed(workspace):
    running = workspace.new_folder(6000)
    with pytest.raises(OutputError, match="taken by requests still running"):
        workspace.new_folder(6000)
    assert running.exists()
    workspace.settle(running)  # it wrote nothing: its 6000 bytes are free again
    assert workspace.new_folder(6000).exists()
    with pytest.raises(OutputError, match="more than the server's 0 MiB for results; ask for fewer texts"):
        workspace.new_folder(20_000)


def test_more_files_for_a_finished_folder_are_reserved_too(workspace):
    first = finished(workspace, 4000)
    second = finished(workspace, 4000)
    assert workspace.reserve(second, 5000)  # 13000 would not fit: the first folder goes
    assert not first.exists() and second.exists()
    assert not workspace.reserve(second, 50_000) and not workspace.reserve(first, 10)


def test_request_ids_are_looked_up_never_taken_as_paths(workspace):
    folder = finished(workspace, 10)
    assert workspace.folder(folder.name) == folder
    for bad in ("..", "../eclip", str(folder), "", None, folder.name + "/.."):
        assert workspace.folder(bad) is None


def test_gradio_files_are_swept_oldest_first_to_their_quota_and_the_sweep_is_reported(workspace):
    forgotten = set()
    workspace.forget = forgotten.update
    uploads = []
    for i in range(6):
        folder = workspace.root / f"hash{i}"
        folder.mkdir()
        (folder / "upload.png").write_bytes(b"x" * 300)
        os.utime(folder / "upload.png", (time.time() - 100 + i, time.time() - 100 + i))
        uploads.append(folder / "upload.png")
    finished(workspace, 500)
    workspace.sweep_gradio()
    kept = [p for p in uploads if p.exists()]
    assert kept == uploads[-3:] and {str(p) for p in uploads[:3]} == forgotten  # 900 <= 1000 bytes, 3 <= 4 files
    assert not (workspace.root / "hash0").exists()  # Gradio's folder per upload goes with it
    workspace.sweep_gradio(incoming=600)  # room for an upload of 600 bytes
    assert [p for p in uploads if p.exists()] == uploads[-1:]
    workspace.sweep_gradio(max_age=50)
    assert not any(p.exists() for p in uploads)
    assert tree_size(workspace.requests) == 500  # eclip's own folders are not Gradio's to sweep


def test_close_waits_for_a_running_request_and_removes_every_file(tmp_path):
    space = Workspace(root=tmp_path / "root")
    started = threading.Event()

    def job():
        with space.job():
            folder = space.new_folder(100)
            started.set()
            time.sleep(0.3)
            (folder / "late.npy").write_bytes(b"x" * 100)

    worker = threading.Thread(target=job)
    worker.start()
    started.wait(5)
    space.close(wait=10)
    worker.join(5)
    assert not space.root.exists()
    with pytest.raises(OutputError, match="shutting down"):
        space.new_folder(1)


def upload_app(space: Workspace, limit: int) -> TestClient:
    """Gradio's upload route in miniature: every posted body becomes a file in a folder of its own under the root."""

    async def upload(request):
        body = await request.body()
        folder = space.root / f"u{time.monotonic_ns()}"
        folder.mkdir()
        (folder / "upload.bin").write_bytes(body)
        return PlainTextResponse("ok")

    async def other(request):
        return PlainTextResponse(str(len(await request.body())))

    routes = [Route("/gradio_api/upload", upload, methods=["POST"]), Route("/gradio_api/queue/join", other, methods=["POST"])]
    app = Starlette(routes=routes,
                    middleware=[Middleware(BodyLimit, workspace=space, upload_bytes=limit, other_bytes=2000)])
    return TestClient(app)


def test_the_upload_route_is_capped_and_a_flood_stays_in_quota(workspace):
    client = upload_app(workspace, limit=100)
    too_big = client.post("/gradio_api/upload", content=b"x" * (100 + MULTIPART_SLACK + 1))
    assert too_big.status_code == 413 and "over this server's limit" in too_big.text
    for _ in range(40):
        assert client.post("/gradio_api/upload", content=b"x" * 300).status_code == 200
        usage = workspace.usage()
        assert usage["gradio_bytes"] <= workspace.quotas.gradio_bytes and usage["gradio_files"] <= workspace.quotas.gradio_files
    unknown_length = client.post("/gradio_api/upload", content=iter([b"x" * 10]))
    assert unknown_length.status_code == 411
    assert client.post("/gradio_api/queue/join", content=b"{}").text == "2"
    assert client.post("/gradio_api/queue/join", content=b"x" * 2001).status_code == 413
    assert client.get("/gradio_api/queue/join").status_code == 405  # other methods pass untouched


def test_templates_are_limited_and_checked_in_the_page_words():
    limits = ServeLimits(max_template_chars=50)
    assert resolve_template("a sketch of a {}.", limits) == "a sketch of a {}."
    for bad, fragment in [("a {} " + "x" * 60, "has 65 characters, more than the limit of 50"),
                          ("a sketch", "has no {} where the text goes"), ("{{}}", "has no {} where the text goes"),
                          ("{} and {}", "is not a template"), ("{0} {name}", "is not a template")]:
        with pytest.raises(TextInputError, match=fragment) as err:
            resolve_template(bad, limits)
        message = str(err.value)
        assert "--template" not in message and "\n" not in message
        assert all(choice in message for choice in TEMPLATE_CHOICES)  # the set names are the dropdown's
    with pytest.raises(TextInputError, match="more than the limit of 200"):
        resolve_template("{}" + "x" * 16_000)


def test_methods_are_named_once_each_and_known():
    assert parse_methods(["rise", "itsm", "rise"], KNOWN) == ["rise", "itsm"]
    with pytest.raises(MethodError, match="50 methods named, more than the 3 there are; name each method once"):
        parse_methods(["itsm"] * 50, KNOWN)
    with pytest.raises(MethodError, match="unknown method 'nope'"):
        parse_methods(["nope"], KNOWN)


def test_texts_times_methods_times_models_is_limited():
    check_request_size(16, 2, 2, ServeLimits(max_maps=64))
    with pytest.raises(OptionError, match=r"16 text\(s\) x 3 method\(s\) x 2 model\(s\) is 96 maps, more than this server's limit of 64"):
        check_request_size(16, 3, 2, ServeLimits(max_maps=64))


def test_the_text_cache_keeps_the_most_recently_used_texts_only():
    model = make_adapter("vit")
    model.text_cache_size = 3
    calls = []
    real = model._encode_tokens
    model._encode_tokens = lambda tokens: calls.append(len(tokens)) or real(tokens)
    expected = model.encode_text(["a", "b", "c", "d", "e"], cache=False)
    calls.clear()
    for text in ["a", "b", "c", "d", "e"]:
        model.encode_text([text])
    assert list(model._text_cache) == ["c", "d", "e"]
    model.encode_text(["c"])
    assert calls == [1] * 5 and list(model._text_cache) == ["d", "e", "c"]  # a hit is used again: newest
    together = model.encode_text(["a", "b", "c", "d", "e", "a"])  # more texts than the cache holds, in one call
    assert torch.allclose(together[:5], expected, atol=1e-6) and torch.equal(together[0], together[5])
    assert len(model._text_cache) == 3 and calls[-1] == 2  # a, b encoded; c, d, e were still cached when asked


def test_a_taken_port_is_one_line_naming_port_before_any_model_loads(monkeypatch, capsys):
    import eclip.serve.models as serve_models

    monkeypatch.setattr(serve_models.ModelCache, "load_start_up", lambda self: pytest.fail("loaded models for a taken port"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_code:
            cli.main(["serve", "--port", str(port)])
    err = capsys.readouterr()
    assert exit_code.value.code == 2 and "http://" not in err.out
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"eclip: error: --port {port}: 127.0.0.1:{port} is already in use")
    assert "pick a free port, e.g. --port " in lines[0] and "GRADIO_SERVER_PORT" not in lines[0]
