"""The README's API examples (the layer, from_dense, the LM) run as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_core_examples_run(capsys):
    text = README.read_text().split("<!-- section:data-train -->")[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "loop_histogram" in out and "mean_lambda" in out and "loops/token" in out
