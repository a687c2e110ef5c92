"""Engine probe: one VersatileFFN sublayer with the ragged-loop engine against dense, same run, same mode.

At the paper-354m FFN shape (d_model 1024, d_hidden 4096, N 8, K 2, L_max 4, bf16) it times
  eval     4k and 16k tokens, forced loop mixes all-1 / uniform / mostly-easy / all-4, eager and CUDA-graphed:
           ratio to dense, and that ratio over the FLOP ideal (mean loops + share of tokens with lambda > 0 x K/N);
  decode   1, 8 and 64 tokens per call, each mix, in a CUDA graph against dense in a CUDA graph (eager too);
  train    fwd+bwd at 4k and 16k, eager: dense, 4-Loop, VersatileFFN "full" (Algorithm 1) and "exact" (the
           engine) on the Gumbel sample of a zero loop head (a uniform mix), "exact" on each forced mix.
Timings are triton.testing.do_bench medians (CUDA events) after warm-up, on random inputs. Every eval mix is
also checked against the plain path (relative error). It prints one JSON document and writes it to --out, with
the device, torch and Triton versions, the commit and the routes the engine took.

    python benchmarks/engine_probe.py --out engine_probe.json     # a GPU (H200: well under 2 minutes)
    python benchmarks/engine_probe.py --quick --device cpu        # tiny shapes: a smoke run (the test suite)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from versatileffn.ffn import VersatileFFNConfig
from versatileffn.ffn import DenseFFN, LoopFFN, VersatileFFN, engine, ragged
from versatileffn.generation import capture as graphed
from versatileffn.model import model_config

MIXES = {"all1": [1.0, 0.0, 0.0, 0.0], "uniform": [0.25, 0.25, 0.25, 0.25], "easy": [0.5, 0.3, 0.15, 0.05],
         "all4": [0.0, 0.0, 0.0, 1.0]}


@dataclass
class Plan:
    preset: str = "paper-354m"  # the FFN shape: d_model, d_hidden of the model preset, VersatileFFNConfig's N, K, L_max
    eval_tokens: tuple[int, ...] = (4096, 16384)
    decode_tokens: tuple[int, ...] = (1, 8, 64)
    train_tokens: tuple[int, ...] = (4096, 16384)


QUICK = Plan(preset="micro", eval_tokens=(96,), decode_tokens=(1, 8), train_tokens=(96,))


def median_ms(fn, device: torch.device, quick: bool) -> float:
    """Median of timed calls after warm-up: triton.testing.do_bench on CUDA (CUDA events, L2 flushed between
    calls; CUDA wheels of PyTorch bring Triton), the wall clock on the CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(2 if quick else 10):
        fn()
    times = []
    for _ in range(3 if quick else 30):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def ffn_config(plan: Plan) -> VersatileFFNConfig:
    return model_config(plan.preset, VersatileFFNConfig(tau_start=1.0)).ffn_layer_config()


def make_layers(s: VersatileFFNConfig, device, dtype):
    """Dense, L_max-Loop and VersatileFFN sharing one set of SwiGLU weights; the loop head at zero (a uniform
    Gumbel sample in training)."""
    torch.manual_seed(0)
    dense = DenseFFN(s.d_model, s.d_hidden)
    loop = LoopFFN(s.d_model, s.d_hidden, n_loops=s.max_loops)
    vffn = VersatileFFN(s)
    for m in (loop, vffn):
        m.load_state_dict(dense.state_dict(), strict=False)
    with torch.no_grad():
        vffn.loop_predictor.weight.zero_()
    vffn.runtime.impl, vffn.runtime.depth_grad = "engine", "exact"
    return [m.to(device, dtype) for m in (dense, loop, vffn)]


def mix_loops(name: str, n: int, device, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.multinomial(torch.tensor(MIXES[name]), n, replacement=True, generator=g) + 1).to(device)


def ideal(loops: torch.Tensor, s: VersatileFFNConfig) -> float:
    """FLOPs of the eval forward over the dense sublayer's: executed loops plus the width path's K/N for the
    tokens with lambda > 0 (the anchor's definition)."""
    return float(loops.float().mean() + (loops < s.max_loops).float().mean() * s.top_k / s.n_experts)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def section_eval(s, dense, vffn, device, dtype, quick, tokens_list, graph: bool) -> dict:
    res: dict = {}
    for tokens in tokens_list:
        x = torch.randn(1, tokens, s.d_model, device=device, dtype=dtype)
        loops = mix_loops("uniform", tokens, device).view(1, tokens)  # a static buffer each mix is copied into
        row: dict = {}
        with torch.no_grad():
            run_dense = lambda: dense(x)  # noqa: E731
            run_vffn = lambda: vffn(x, loops=loops)  # noqa: E731
            modes = {"eager": (run_dense, run_vffn)}
            if graph:
                modes["graph"] = (graphed(run_dense), graphed(run_vffn))
            for mode, (fn_dense, fn_vffn) in modes.items():
                dense_ms = median_ms(fn_dense, device, quick)
                per = {"dense_ms": dense_ms}
                for name in MIXES:
                    loops.copy_(mix_loops(name, tokens, device).view(1, tokens))
                    ms = median_ms(fn_vffn, device, quick)
                    target = ideal(loops, s)
                    per[name] = {"ms": ms, "x_dense": ms / dense_ms, "ideal_x_dense": target,
                                 "over_ideal": ms / dense_ms / target}
                    if mode == "eager":
                        vffn.runtime.impl = "plain"
                        per[name]["rel_err_vs_plain"] = rel_err(vffn(x, loops=loops), run_vffn())
                        vffn.runtime.impl = "engine"
                row[mode] = per
        res[str(tokens)] = row
    return res


def section_train(s, dense, loop, vffn, device, dtype, quick, tokens_list) -> dict:
    res: dict = {}
    params = [p for m in (dense, loop, vffn) for p in m.parameters()]
    for tokens in tokens_list:
        x = torch.randn(1, tokens, s.d_model, device=device, dtype=dtype, requires_grad=True)  # as inside a model
        gy = torch.randn_like(x)
        loops = mix_loops("uniform", tokens, device).view(1, tokens)

        def step(fn):
            def run():
                for p in params:
                    p.grad = None
                x.grad = None
                fn().backward(gy)
            return run

        def vffn_with(depth_grad, forced):
            def run():
                vffn.runtime.depth_grad = depth_grad
                return vffn(x, loops=loops if forced else None)
            return run

        ms = {"dense": median_ms(step(lambda: dense(x)), device, quick),
              "loop4": median_ms(step(lambda: loop(x)), device, quick)}
        vffn.reset_stats()
        ms["vffn_full"] = median_ms(step(vffn_with("full", False)), device, quick)
        hist = vffn.stats.summary()["loop_histogram"]
        ms["vffn_exact"] = median_ms(step(vffn_with("exact", False)), device, quick)
        for name in MIXES:
            loops.copy_(mix_loops(name, tokens, device).view(1, tokens))
            ms[f"vffn_exact_{name}"] = median_ms(step(vffn_with("exact", True)), device, quick)
        res[str(tokens)] = {"ms": ms, "x_dense": {k: v / ms["dense"] for k, v in ms.items()},
                            "sampled_loop_histogram": hist, "flop_x_dense": train_flops(s, vffn, x, hist)}
    return res


def train_flops(s: VersatileFFNConfig, vffn, x, hist) -> dict:
    """Matmul FLOPs of fwd+bwd over dense's (backward = 2x forward): 'full' runs L_max loops with backward,
    'exact' every loop forward and, backward, loop l for the tokens with l_hat >= l; the width path is K/N of a
    down projection (one third of a loop) on the grouped route, a whole one otherwise."""
    grouped = engine.uses_grouped_width(vffn, x.reshape(-1, s.d_model))
    width = (s.top_k / s.n_experts if grouped else 1.0) / 3
    total = sum(hist)
    reach = sum(sum(hist[k:]) / total for k in range(s.max_loops))  # loops that run a backward, per token
    return {"loop4": float(s.max_loops), "vffn_full": s.max_loops + width,
            "vffn_exact": (s.max_loops + width + 2 * (reach + width)) / 3}


def environment(device, dtype, x) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        commit = None
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "triton": triton_version, "commit": commit, "command": " ".join(sys.argv),
            "dtype": str(dtype).replace("torch.", ""),
            "routes": {"grouped_gemm": ragged.gmm_runs(device, dtype), "triton_kernels": ragged.triton_runs(x)}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, few repetitions (a smoke run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="engine_probe.json", help="where the JSON goes")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16
    plan = QUICK if args.quick else Plan()
    s = ffn_config(plan)
    dense, loop, vffn = make_layers(s, device, dtype)
    shape = {k: getattr(s, k) for k in ("d_model", "d_hidden", "n_experts", "top_k", "max_loops")}
    out = {**environment(device, dtype, torch.zeros(1, device=device, dtype=dtype)), "plan": asdict(plan),
           "shape": shape, "mixes": MIXES}
    t0 = time.time()
    graph = device.type == "cuda"
    for m in (dense, loop, vffn):
        m.eval()
    out["eval"] = section_eval(s, dense, vffn, device, dtype, args.quick, plan.eval_tokens, graph)
    out["decode"] = section_eval(s, dense, vffn, device, dtype, args.quick, plan.decode_tokens, graph)
    for m in (dense, loop, vffn):
        m.train()
    out["train"] = section_train(s, dense, loop, vffn, device, dtype, args.quick, plan.train_tokens)
    out["seconds"] = time.time() - t0
    text = json.dumps(out, indent=1)
    print(text)
    Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
