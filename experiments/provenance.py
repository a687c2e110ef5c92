"""Where a result record came from: device, torch, the command line and the commit (when git can tell)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit_hash() -> str | None:
    """$VERSATILEFFN_COMMIT if set (a copied working tree on a device machine: its .git may be stale or absent),
    else HEAD of the checkout the script runs from; None outside a git checkout."""
    if os.environ.get("VERSATILEFFN_COMMIT"):
        return os.environ["VERSATILEFFN_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def provenance(device) -> dict:
    import torch

    device = torch.device(device)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "command": " ".join(["python", *sys.argv]), "commit": commit_hash()}
