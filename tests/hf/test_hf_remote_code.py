"""Saved folders carry self-contained modeling code: ``trust_remote_code=True`` loads them in a Python that cannot
import versatileffn, with the same logits; the bundle is generated from the package's own source."""
import os
import subprocess
import sys

import pytest
import torch

from versatileffn.hf.remote_code import bundle_sources, flat_name

transformers = pytest.importorskip("transformers")

# runs under `python -I` (no PYTHONPATH, no script folder, no user site) with versatileffn made unimportable too (the
# development install is editable: a finder in site-packages would still find it)
SCRIPT = r"""
import importlib.abc, sys

class NoVersatileFFN(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "versatileffn":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoVersatileFFN())
import torch, transformers
from safetensors.torch import load_file
folder, expected = sys.argv[1], load_file(sys.argv[2])
model = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    torch.testing.assert_close(model(expected["ids"]).logits, expected["logits"], rtol=0, atol=1e-5)
    out = model.generate(expected["ids"][:1, :5], max_new_tokens=3, do_sample=False)
assert out.shape == (1, 8)
assert not [m for m in sys.modules if m.split(".")[0] == "versatileffn"]
print("ok", type(model).__name__, type(model).__module__)
"""


def test_bundle_is_the_package_source_with_flat_imports():
    import ast

    import versatileffn.ffn.versatile as versatile

    sources = bundle_sources()
    assert {"vffn__hf__modeling.py", "vffn__ffn__versatile.py", "vffn__model.py"} <= set(sources)

    def without_imports(text):
        return [ast.dump(n) for n in ast.parse(text).body if not isinstance(n, ast.ImportFrom)]
    # the same code, statement for statement, apart from the imports
    assert without_imports(sources["vffn__ffn__versatile.py"]) == without_imports(open(versatile.__file__).read())
    for name, text in sources.items():  # imports: the flat siblings only
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and (node.module or "").startswith("vffn__") or (
                    node.module is None and all(a.name.startswith("vffn__") for a in node.names)), (name, node.lineno)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(m.split(".")[0] == "versatileffn" for m in mods), (name, node.lineno)
    assert "from .vffn__ffn__common import" in sources["vffn__hf__modeling.py"]
    assert flat_name("versatileffn.ffn.ragged_kernels") + " as _kernels" in sources["vffn__ffn__ragged.py"]


def test_remote_code_loads_without_versatileffn(tmp_path, make_dense, ffn_options, trained, input_ids, newest_arch):
    from safetensors.torch import save_file

    from versatileffn.hf import convert_dense_model, save_converted

    model = trained(convert_dense_model(make_dense(newest_arch), ffn_options), input_ids)
    save_converted(model, tmp_path / "m")
    import tokenizers
    from tokenizers import models, pre_tokenizers

    bpe = tokenizers.Tokenizer(models.WordLevel({"<eos>": 2, "a": 3, "<unk>": 0}, unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>").save_pretrained(tmp_path / "m")
    with torch.no_grad():
        save_file({"ids": input_ids, "logits": model(input_ids).logits.contiguous()}, str(tmp_path / "expected.st"))
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run([sys.executable, "-I", str(tmp_path / "run.py"), str(tmp_path / "m"),
                          str(tmp_path / "expected.st")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[:2] == ["ok", type(model).__name__]
    assert "versatileffn" not in run.stdout.split()[2].split(".")[0]  # the folder's copy, not the package
