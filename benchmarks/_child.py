"""Run one benchmark cell in a fresh process, so its peak memory and warm caches are its own."""

from __future__ import annotations

import json
import subprocess
import sys


def run_child(cmd: list[str]) -> dict:
    """Run ``cmd``; its last stdout line is the cell's JSON result. A failure exits with its stderr."""
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
