"""`make demo` runs `fieldline demo`: a broker, an agent, simulated devices and the cloud core, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.servicekit import require_binary


def test_demo_runs_the_product_end_to_end(tmp_path: Path) -> None:
    require_binary("mosquitto")
    result = subprocess.run(
        [sys.executable, "-m", "fieldline", "demo", "--devices", "5", "--duration", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FIELDLINE_DATA_DIR": str(tmp_path), "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "cloud core API: http://127.0.0.1:" in out
    published = int(re.findall(r"messages published\s*│\s*(\d+)", out)[-1])
    ingested = re.findall(r"batches / points / duplicates\s*│\s*(\d+) / (\d+) / (\d+)", out)[-1]
    assert published > 0
    assert int(ingested[0]) > 0
    assert int(ingested[1]) > 0
    assert int(ingested[2]) == 0
