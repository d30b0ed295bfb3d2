"""`eclip serve`: the web demo (Gradio) on this machine, private unless --host says otherwise."""
from __future__ import annotations

import ipaddress
import logging
import signal
import socket

import typer

from eclip.cli import options
from eclip.cli.app import app


def is_loopback(host: str) -> bool:
    """True if only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_taken(host: str, port: int) -> bool:
    """True if a server already listens on `host`:`port` (binding it fails; a port left in TIME_WAIT counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_port(host: str, port: int) -> None:
    """`--port` is free on `--host`, checked before any model loads and before the address is announced."""
    from eclip.errors import OptionError

    if port_taken(host, port):
        free = next((p for p in range(port + 1, min(port + 100, 65536)) if not port_taken(host, p)), None)
        example = f", e.g. --port {free}" if free else ""
        raise OptionError(f"--port {port}: {host}:{port} is already in use (another server listens there); "
                          f"stop it or pick a free port{example}")


def model_specs(models: list[str], pretrained: list[str]) -> list[tuple[str, str | None]]:
    """Pair the i-th --pretrained with the i-th --model; models after the last --pretrained get none."""
    if len(pretrained) > len(models):
        raise typer.BadParameter(f"{len(pretrained)} --pretrained for {len(models)} --model; give one --model per --pretrained",
                                 param_hint="--pretrained")
    return [(name, pretrained[i] if i < len(pretrained) and pretrained[i] else None) for i, name in enumerate(models)]


@app.command("serve")
def serve_command(
    model: list[str] = options.models(None, "Also offer this model (bundled name, open_clip name, hf-hub:ID, model folder); repeat "
                                            "for several. The bundled ones are always offered."),
    pretrained: list[str] = options.pretrained("open_clip tag or checkpoint file of the --model at the same position (repeat in the "
                                               "same order)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. The default is reachable from this machine only; "
                                                         "0.0.0.0 exposes the demo to the network (no login)."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to listen on."),
    device: str = options.device(),
    precision: str = options.precision("fp32", options.MAPS_PRECISION_HELP),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.01, help="Largest upload accepted, in MB."),
    max_pixels: int = typer.Option(16_777_216, "--max-pixels", min=1, help="Largest image accepted, in pixels (decompression bombs)."),
    max_texts: int = typer.Option(16, "--max-texts", min=1, help="Most texts per request."),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Jobs run at the same time; the others wait in the queue."),
    queue_size: int = typer.Option(32, "--queue-size", min=1, help="Jobs that may wait; more are turned away with a message."),
    max_maps: int = typer.Option(64, "--max-maps", min=1, help="Most maps per request: texts x methods x models."),
    map_size: int = typer.Option(1024, "--map-size", min=16, max=8192,
                                 help="Longest side of the maps written for download (as `eclip explain --map-size`)."),
    disk_quota_mb: float = typer.Option(1024.0, "--disk-quota-mb", min=1.0,
                                        help="Disk for the requests' results together, in MB; the oldest are removed first."),
    upload_quota_mb: float = typer.Option(256.0, "--upload-quota-mb", min=1.0,
                                          help="Disk for uploaded files together, in MB; the oldest are removed first."),
    max_sessions: int = typer.Option(1000, "--max-sessions", min=1,
                                     help="Browser sessions remembered; the least recently seen are forgotten first."),
) -> None:
    """Start the web demo: upload or pick an image, type texts, compare methods and vanilla vs ECLIP in the browser.

    Everything the server writes lives in one temporary folder under the disk quotas and is removed when it
    stops (Ctrl+C or `kill`).
    """
    from eclip.cli.checks import up_front

    if upload_quota_mb < max_upload_mb:
        from eclip.errors import OptionError

        raise OptionError(f"--upload-quota-mb {upload_quota_mb:g} is less than --max-upload-mb {max_upload_mb:g}; "
                          "give uploads room for at least one")
    check_port(host, port)
    up_front(precision=precision, device=device)
    specs = model_specs(list(model or []), list(pretrained or []))
    logging.getLogger("eclip").setLevel(logging.INFO)

    from eclip.serve import ModelCache, Quotas, ServeLimits
    from eclip.serve.page import serve

    models = ModelCache(specs, device=device, precision=precision)
    limits = ServeLimits(max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_texts=max_texts, max_maps=max_maps,
                         map_side=map_size)
    quotas = Quotas(requests_bytes=int(disk_quota_mb * 2**20), gradio_bytes=int(upload_quota_mb * 2**20))

    def ready() -> None:
        check_port(host, port)  # again: loading the models took a while
        if not is_loopback(host):
            typer.echo(f"eclip: warning: serving on {host}:{port}, reachable from other machines; anyone who can reach it can "
                       "run jobs on this machine (there is no login). Use --host 127.0.0.1 to keep it private.", err=True)
        typer.echo(f"eclip serve: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}  (models: "
                   f"{', '.join(models.labels)}; Ctrl+C stops)")

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl+C does, and the temporary files are removed
    serve(models, limits, host, port, concurrency, queue_size, quotas=quotas, max_sessions=max_sessions, ready=ready)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
