"""The speed targets (issue 8) and whether a run met them."""
from __future__ import annotations

from .common import LOOP_MIXES, Shape

TARGETS = {"train_16k": 4.5, "train_4k": 5.5, "exact_uniform": 3.6, "infer_over_ideal": 1.15, "decode": 2.0,
           "mfu": 0.35}


def targets(out: dict, shape: Shape) -> dict:
    """Each target: met (True/False) with the measured figure, or why it was not measured."""
    t: dict = {}

    def get(*path):
        node = out
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return node if isinstance(node, (int, float)) else None

    n_big, n_small = (str(n) for n in shape.tokens[:2])
    for mode in ("eager", "compiled"):
        sec = f"train_{mode}"
        best = lambda n: min([v for v in (get(sec, n, "x_dense", "vffn_full"), get(sec, n, "x_dense", "vffn_exact"))  # noqa: E731
                              if v is not None], default=None)
        for n, key in ((n_big, "train_16k"), (n_small, "train_4k")):
            v = best(n)
            t[f"{key}_{mode}"] = {"target": TARGETS[key], "measured": v, "met": v is not None and v <= TARGETS[key]}
        v = get(sec, n_big, "x_dense", "vffn_exact")
        t[f"exact_uniform_{mode}"] = {"target": TARGETS["exact_uniform"], "measured": v,
                                      "met": v is not None and v <= TARGETS["exact_uniform"]}
        for mix in LOOP_MIXES:
            v = get(f"infer_{mode}", n_big, "mixes", mix, "ours_over_ideal")
            t[f"infer_{mix}_{mode}"] = {"target": TARGETS["infer_over_ideal"], "measured": v,
                                        "met": v is not None and v <= TARGETS["infer_over_ideal"]}
        v = get(f"e2e_{mode}", "versatile", "mfu")
        t[f"mfu_{mode}"] = {"target": TARGETS["mfu"], "measured": v, "met": v is not None and v >= TARGETS["mfu"]}
    dec = out.get("decode")
    dec = dec.get("versatile_x_dense") or {} if isinstance(dec, dict) else {}
    worst = max(dec.values(), default=None)
    t["decode_worst_batch_eager"] = {"target": TARGETS["decode"], "measured": worst,
                                     "met": worst is not None and worst <= TARGETS["decode"]}
    dec = out.get("decode")
    dec = dec.get("versatile_ffn_compiled_x_dense_ffn_compiled") or {} if isinstance(dec, dict) else {}
    worst = max(dec.values(), default=None)
    t["decode_worst_batch_ffn_compiled"] = {"target": TARGETS["decode"], "measured": worst,
                                            "met": worst is not None and worst <= TARGETS["decode"]}
    return t
