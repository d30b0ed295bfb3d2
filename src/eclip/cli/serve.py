"""`eclip serve`: the web demo (Gradio) on this machine, private unless --host says otherwise."""
from __future__ import annotations

import ipaddress
import logging
import signal

import typer

from eclip.cli.app import app


def is_loopback(host: str) -> bool:
    """True if only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def model_specs(models: list[str], pretrained: list[str]) -> list[tuple[str, str | None]]:
    """Pair the i-th --pretrained with the i-th --model; models after the last --pretrained get none."""
    if len(pretrained) > len(models):
        raise typer.BadParameter(f"{len(pretrained)} --pretrained for {len(models)} --model; give one --model per --pretrained",
                                 param_hint="--pretrained")
    return [(name, pretrained[i] if i < len(pretrained) and pretrained[i] else None) for i, name in enumerate(models)]


@app.command("serve")
def serve_command(
    model: list[str] = typer.Option(None, "--model", "-m", help="Also offer this model (bundled name, open_clip name, hf-hub:ID, "
                                                               "model folder); repeat for several. The bundled ones are always offered."),
    pretrained: list[str] = typer.Option(None, "--pretrained", help="open_clip tag or checkpoint file of the --model at the same "
                                                                   "position (repeat in the same order)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. The default is reachable from this machine only; "
                                                         "0.0.0.0 exposes the demo to the network (no login)."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to listen on."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.01, help="Largest upload accepted, in MB."),
    max_pixels: int = typer.Option(16_777_216, "--max-pixels", min=1, help="Largest image accepted, in pixels (decompression bombs)."),
    max_texts: int = typer.Option(16, "--max-texts", min=1, help="Most texts per request."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Jobs run at the same time; the others wait in the queue."),
    queue_size: int = typer.Option(32, "--queue-size", min=1, help="Jobs that may wait; more are turned away with a message."),
) -> None:
    """Start the web demo: upload or pick an image, type texts, compare methods and vanilla vs ECLIP in the browser."""
    from eclip.device import resolve_device

    resolve_device(device)
    specs = model_specs(list(model or []), list(pretrained or []))
    logging.getLogger("eclip").setLevel(logging.INFO)

    from eclip.serve import ModelCache, ServeLimits
    from eclip.serve.page import serve

    models = ModelCache(specs, device=device)

    def ready() -> None:
        if not is_loopback(host):
            typer.echo(f"eclip: warning: serving on {host}:{port}, reachable from other machines; anyone who can reach it can "
                       "run jobs on this machine (there is no login). Use --host 127.0.0.1 to keep it private.", err=True)
        typer.echo(f"eclip serve: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}  (models: "
                   f"{', '.join(models.labels)}; Ctrl+C stops)")

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl+C does, and the uploads are removed
    serve(models, ServeLimits(max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_texts=max_texts), host, port, concurrency,
          queue_size, ready=ready)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
