"""Start and stop real emulators for the on-the-wire test tiers (skipped where they are not installed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@contextlib.contextmanager
def gcs_emulator(bucket: str) -> Iterator[str]:
    """gcp-storage-emulator in memory on a free loopback port, with `bucket` created; yields its URL."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._api._httpd.server_address[1]}"  # the underlying HTTPServer's port
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen, *, timeout: float = 30.0, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def pubsub_emulator_launcher() -> tuple[Path | None, str]:
    """The SDK's `cloud-pubsub-emulator` script, or None and the reason it is unavailable."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None, "gcloud is not installed (the Pub/Sub emulator ships with the Google Cloud SDK)"
    try:
        root = subprocess.run([gcloud, "info", "--format=value(installation.sdk_root)"], capture_output=True,
                              text=True, timeout=60, check=True,
                              env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"`gcloud info` failed: {exc}"
    launcher = Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not launcher.is_file():
        return None, f"the Pub/Sub emulator is not installed under {root} (gcloud components install pubsub-emulator)"
    if shutil.which("java") is None:
        return None, "the Pub/Sub emulator needs Java, which is not installed"
    return launcher, ""


@dataclass
class Emulator:
    host: str
    """host:port, the value of PUBSUB_EMULATOR_HOST."""
    process: subprocess.Popen


@contextlib.contextmanager
def pubsub_emulator(launcher: Path, log_path: Path) -> Iterator[Emulator]:
    """Run the Pub/Sub emulator on a free loopback port; stopped (its whole process group) on exit."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(launcher), "--host=127.0.0.1", f"--port={port}"], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout=60, what="Pub/Sub emulator")
        yield Emulator(f"127.0.0.1:{port}", process)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its children."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
