"""Helpers of the reliability tests (a module name of its own: several test folders have a conftest)."""
import hashlib
from pathlib import Path

import yaml


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``root`` (the test's proof that nothing was lost)."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(err: str, command: str) -> str:
    """The CLI's answer to a user's mistake: exactly one line, ``versatileffn CMD: error: ...``, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"versatileffn {command}: error: "), err
    return lines[0]


def write_config(cfg, path: Path) -> Path:
    from versatileffn.train.config import run_config_to_dict

    path.write_text(yaml.safe_dump(run_config_to_dict(cfg)))
    return path
