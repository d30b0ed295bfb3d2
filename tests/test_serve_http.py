"""`eclip serve` driven over HTTP, as a script or an attacker would drive it, not through the page.

One server with small limits (its temporary folder is a folder of the test's own, so its disk can be
read): hostile requests are refused in one line before any work, results and uploads stay within
their quotas, a second server on the same port says so, and SIGTERM leaves no file behind.
"""
from __future__ import annotations

import html
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers.browser import eclip_process

from eclip.serve.uploads import MULTIPART_SLACK
from eclip.serve.workspace import tree_size

pytestmark = pytest.mark.slow  # a server process

MiB = 2**20
UPLOAD_MB, UPLOAD_QUOTA_MB, DISK_QUOTA_MB, MAX_MAPS = 0.25, 1, 1, 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio_client")
    tmp = tmp_path_factory.mktemp("server-tmp")
    args = ["--max-upload-mb", str(UPLOAD_MB), "--upload-quota-mb", str(UPLOAD_QUOTA_MB), "--disk-quota-mb", str(DISK_QUOTA_MB),
            "--max-maps", str(MAX_MAPS)]
    with eclip_process(*args, env={"TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}) as served:
        served.tmp = tmp
        yield served


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=False)


def root(server) -> Path:
    (found,) = server.tmp.glob("eclip-serve-*")
    return found


def gradio_area(server) -> tuple[int, int]:
    """(bytes, files) under the server's root outside eclip's own folder: what Gradio's upload route stored."""
    files = [p for p in root(server).rglob("*") if p.is_file() and "eclip" not in p.relative_to(root(server)).parts[:1]]
    return sum(p.stat().st_size for p in files), len(files)


def explain(client, texts="circle", template="verbatim", model="synth-vit", compare=False, dense=("itsm",), other_groups=None,
            sample="000000", upload=None):
    groups = other_groups or ([], [], [], [])
    status, _, table, *_ = client.predict(upload, sample, texts, template, model, compare, list(dense), *groups, api_name="/explain")
    return html.unescape(status), table


def test_a_16_kb_template_is_refused_before_any_work(client):
    status, table = explain(client, template="a photo of a {} " + "x" * 16_000)
    assert "eclip-error" in status and "the prompt template has 16016 characters, more than the limit of 200" in status
    assert not table["data"]


def test_a_method_named_50_times_is_refused_and_named_twice_runs_once(client):
    status, _ = explain(client, dense=["itsm"] * 50)
    assert "eclip-error" in status and "50 methods named, more than the 19 there are; name each method once" in status
    status, table = explain(client, texts="circle\nstar", dense=["itsm", "itsm"])
    assert "eclip-ok" in status and len(table["data"]) == 2


def test_too_many_texts_times_methods_times_models_is_refused(client):
    from eclip.models.loading import bundled_fine_tunes

    models = 1 + len(bundled_fine_tunes()["synth-vit"])  # the comparison: synth-vit and each of its fine-tunes
    texts = "\n".join(f"text {i}" for i in range(5))
    status, table = explain(client, texts=texts, dense=["itsm", "maskclip"], compare=True)
    maps = 5 * 2 * models
    assert "eclip-error" in status and f"is {maps} maps, more than this server's limit of {MAX_MAPS} per request" in status
    assert not table["data"]


def test_results_stay_within_the_disk_quota(client, server):
    requests = root(server) / "eclip" / "requests"
    for i in range(12):
        status, _ = explain(client, texts=f"circle {i}\nstar {i}\nring {i}\nheart {i}", sample=f"00000{i % 6}")
        assert "eclip-ok" in status
        assert tree_size(requests) <= DISK_QUOTA_MB * MiB
    assert len(list(requests.iterdir())) < 12  # the oldest went


def test_an_upload_flood_stays_within_the_upload_quota(server):
    upload = server.url + "gradio_api/upload"
    with httpx.Client(timeout=60) as http:
        for _ in range(30):  # 30 distinct files of 200 kB: 6 MB posted to a 1 MB area
            answer = http.post(upload, files={"files": ("x.png", secrets.token_bytes(200_000), "image/png")})
            assert answer.status_code == 200, answer.text
            size, count = gradio_area(server)
            assert size <= UPLOAD_QUOTA_MB * MiB, size
        many = [("files", (f"{i}.png", secrets.token_bytes(100_000), "image/png")) for i in range(10)]  # 1 MB in one post
        assert http.post(upload, files=many).status_code == 413
        assert int(UPLOAD_MB * MiB) + MULTIPART_SLACK < 10 * 100_000
        chunked = http.post(upload, content=iter([b"--x\r\n"] * 3), headers={"content-type": "multipart/form-data; boundary=x"})
        assert chunked.status_code == 411
        assert http.post(server.url + "gradio_api/queue/join", content=b"x" * (2 * MiB)).status_code == 413
    assert gradio_area(server)[0] <= UPLOAD_QUOTA_MB * MiB


def test_an_upload_is_explained_and_an_oversize_one_is_refused(client, server):
    from gradio_client import handle_file

    from eclip.data.bundled import sample_images

    status, table = explain(client, upload=handle_file(str(sample_images()[2])), sample="")
    assert "eclip-ok" in status and status.count("upload") == 1 and len(table["data"]) == 1
    big = b"\x89PNG" + secrets.token_bytes(int(UPLOAD_MB * MiB) + 1000)
    answer = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=60)
    assert answer.status_code == 413


def test_a_second_server_on_the_same_port_says_so_in_one_line(server):
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    run = subprocess.run([sys.executable, "-c", "from eclip.cli import main; main()", "serve", "--port", port], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "TMPDIR": str(server.tmp)})
    assert run.returncode == 2 and "http://" not in run.stdout
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith(f"eclip: error: --port {port}: 127.0.0.1:{port} is already in use") and "--port " in run.stderr


def test_sigterm_removes_every_temporary_file(server):
    assert any(root(server).rglob("*.npy"))
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, server.output()
    left = [str(p.relative_to(server.tmp)) for p in server.tmp.rglob("*")]
    assert not left, left
