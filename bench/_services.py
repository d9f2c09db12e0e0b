"""What the benchmark scripts share: a free port, and a Mosquitto of the run's own (``python bench/x.py`` puts
``bench/`` on the import path, so the scripts import this as ``_services``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mosquitto(workdir: Path, options: str = "") -> Iterator[int]:
    """A Mosquitto on a free port of 127.0.0.1 with anonymous access and the extra config lines ``options``,
    started and waited for; yields its port, and stops it afterwards."""
    port = free_port()
    conf = workdir / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_type error\n"
        + options
        # Started as root, mosquitto drops to its own user, which cannot read the run's directory.
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"mosquitto did not start (see {conf})") from None
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(10)
