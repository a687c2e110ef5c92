"""The tensor-parallel plan of converted models (issue 15): attention and the LM head sharded, the VersatileFFN
sublayer replicated (its virtual experts are windows of the hidden units that a column split would cut)."""
import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")

from versatileffn.hf import convert_dense_model, save_converted


def _matches(pattern: str, name: str) -> bool:
    return re.fullmatch(pattern.replace(".", r"\.").replace("*", r"\d+"), name) is not None


def test_the_plan_names_existing_modules_and_leaves_the_ffn_replicated(arch, make_dense, ffn_options):
    model = convert_dense_model(make_dense(arch), ffn_options)
    plan = model.config.base_model_tp_plan
    assert plan and model.supports_tp_plan
    modules = [n for n, _ in model.model.named_modules()]
    assert all(any(_matches(p, n) for n in modules) for p in plan), "a rule that matches nothing"
    ffn = [n for n in modules if ".versatile_ffn" in n]
    assert not any(_matches(p, n) for p in plan for n in ffn)
    source = getattr(transformers, type(make_dense(arch).config).__name__).base_model_tp_plan
    assert plan == {k: v for k, v in source.items() if ".mlp." not in k}  # attention as the source shards it


SCRIPT = """
import os, sys, torch, transformers
import versatileffn

def run(rank, folder, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, tp_plan="auto").eval()
    assert model.tp_size == 2
    ids = torch.load(os.path.join(folder, "ids.pt"))
    with torch.no_grad():
        torch.save(model(ids).logits, os.path.join(folder, f"logits{rank}.pt"))

if __name__ == "__main__":
    torch.multiprocessing.spawn(run, args=(sys.argv[1], int(sys.argv[2])), nprocs=2)
"""


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VERSATILEFFN_SLOW_TESTS") != "1",
                    reason="two processes, about a minute on CPU: run with VERSATILEFFN_SLOW_TESTS=1")
def test_two_rank_tensor_parallel_gives_the_single_process_logits(norm_arch, make_dense, ffn_options, input_ids,
                                                                  tmp_path):
    model = convert_dense_model(make_dense(norm_arch), ffn_options).eval()
    save_converted(model, tmp_path / "m")
    torch.save(input_ids, tmp_path / "m" / "ids.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "tp.py"  # a file: spawned workers import their function from it
    script.write_text(textwrap.dedent(SCRIPT))
    subprocess.run([sys.executable, str(script), str(tmp_path / "m"), str(port)], check=True, timeout=300)
    with torch.no_grad():
        ref = model(input_ids).logits
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(tmp_path / "m" / f"logits{rank}.pt"), ref, rtol=0, atol=1e-5)
