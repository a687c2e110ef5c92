"""VersatileFFN (Nie et al., arXiv 2512.14531, Sec. 3): width and depth paths that reuse ONE SwiGLU FFN.

Width path (Eq. 4-8): N virtual experts, expert k = hidden units [k*S, k*S + d_expert) of gate_proj/up_proj
and the matching columns of down_proj; top-K routed on the un-normalised H; Y_width = sum_k g_k Y_k.
Depth path (Eq. 9-11): H^(l) = F(H^(l-1)); a loop head picks each token's loop count with a
Gumbel-softmax straight-through sample; Y_depth = sum_l p_l H^(l).
Fusion (Eq. 12-13, 3): E[L] = sum_l l p_l, lambda = (L_max - E[L]) / L_max, Y = lambda Y_width + (1-lambda) Y_depth.

Two identities make this cheaper than the paper's description without changing its function:
* phi acts element-wise on hidden units, so an expert's activations are a slice of the full activations
  a = phi(W_proj RMSNorm(H)), and  sum_k g_k W_out^(k) a[I_k] = W_out (a * m)  with the mask
  m_j = sum_{k selected, j in I_k} g_k. Overlapping windows (d_expert > d_hidden/N) are handled exactly.
* a is also loop 1 of the depth path (H^(0) = H, same norm, same weights), so the width path costs one
  extra down projection on activations the depth path computes anyway.
Training runs every token through all L_max loops (Algorithm 1: the loop head's straight-through
gradient needs every H^(l)); eval mode runs each token exactly its predicted loops on a shrinking,
sorted batch and runs the width path only for tokens with lambda > 0 ("Inference Optimization").

Exact-gradient depth (``depth_grad``): the forward value of p is one-hot(l_hat), so dY/dH^(l) = 0 for
every l != l_hat and no gradient flows through loops after a token's sampled depth; only the loop
head's straight-through term <dY, H^(l)> needs their VALUES. "exact" sorts tokens by l_hat once (one
host sync per layer) and runs loop l with autograd only on the tokens with l_hat >= l, the rest under
no_grad: the same gradients to rounding, backward through 2.5 instead of 4 loops for a uniform loop mix.
"full" is Algorithm 1 as written (sync-free, ``torch.compile(fullgraph=True)``-able); "auto" picks
"exact" on CUDA in eager mode from ``exact_min_tokens`` tokens per call (where it measured faster) and
"full" elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import require
from .common import (FFNBaseConfig, attach_aux_loss, check_sublayer_input, fp32_logits, switch_balance_loss,
                     top_k_gates)
from .dense import DenseFFN
from .fast import count_values, is_recomputing, permute_rows, select_loop_states, sort_by_loops
from .stats import FFNStats

VERSATILE_MODES = ("gated", "width", "depth", "ungated")
DEPTH_GRAD_MODES = ("auto", "full", "exact")  # how VersatileFFN's training forward builds the depth graph


@dataclass
class VersatileFFNConfig(FFNBaseConfig):
    """Hyper-parameters of one VersatileFFN sublayer (paper Sec. 3; defaults = the paper's main setting).

    mode selects the Table 3 ablations: ``gated`` (width + depth fused by Eq. 13), ``width`` (width path
    only), ``depth`` (depth path only), ``ungated`` (width + depth with lambda fixed at 0.5). The shape
    (d_model, d_hidden, norm_eps, init_std) is ``FFNBaseConfig``'s.
    """

    kind: str = "versatile"
    n_experts: int = 8
    top_k: int = 2
    d_expert: int | None = None  # None -> d_hidden // n_experts (non-overlapping virtual experts)
    max_loops: int = 4
    mode: str = "gated"
    tau_start: float = 5.0
    tau_end: float = 0.1
    tau_decay: float = 0.99984  # per optimizer step (the released config's factor)
    balance_loss_coef: float = 1e-5
    check_finite: bool = False  # debug mode: reject NaN/Inf inputs (costs a host sync per call)
    # training forward: "full" = Algorithm 1 (sync-free), "exact" = backward graphs only up to each token's
    # sampled depth (same gradients, one host read), "auto" = exact on CUDA in eager mode for large calls
    depth_grad: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.n_experts, int) and self.n_experts >= 1, "n_experts", "an integer >= 1", self.n_experts)
        require(isinstance(self.top_k, int) and 1 <= self.top_k <= self.n_experts, "top_k",
                f"an integer in [1, n_experts={self.n_experts}]", self.top_k)
        require(isinstance(self.max_loops, int) and self.max_loops >= 1, "max_loops", "an integer >= 1", self.max_loops)
        require(self.mode in VERSATILE_MODES, "mode", f"one of {VERSATILE_MODES}", self.mode)
        require(self.depth_grad in DEPTH_GRAD_MODES, "depth_grad", f"one of {DEPTH_GRAD_MODES}", self.depth_grad)
        if self.has_shape and self.d_expert is None:
            require(self.d_hidden % self.n_experts == 0, "d_hidden",
                    f"divisible by n_experts={self.n_experts} when d_expert is not set", self.d_hidden)
        elif self.has_shape:
            require(isinstance(self.d_expert, int) and 1 <= self.d_expert <= self.d_hidden, "d_expert",
                    f"an integer in [1, d_hidden={self.d_hidden}]", self.d_expert)
            if self.n_experts > 1:
                require(self.expert_stride >= 1, "d_expert",
                        f"small enough that the stride floor((d_hidden - d_expert)/(n_experts - 1)) >= 1 "
                        f"(d_hidden={self.d_hidden}, n_experts={self.n_experts}), so experts differ", self.d_expert)
        require(self.tau_start > 0 and self.tau_end > 0 and self.tau_end <= self.tau_start, "tau_start/tau_end",
                "positive with tau_end <= tau_start", (self.tau_start, self.tau_end))
        require(0 < self.tau_decay <= 1, "tau_decay", "in (0, 1]", self.tau_decay)
        require(self.balance_loss_coef >= 0, "balance_loss_coef", ">= 0", self.balance_loss_coef)

    @property
    def expert_dim(self) -> int:
        return self.d_expert if self.d_expert is not None else self.d_hidden // self.n_experts

    @property
    def expert_stride(self) -> int:
        """Eq. 4: S = floor((d_hidden - d_expert) / (N - 1))."""
        if self.n_experts == 1:
            return 0
        return (self.d_hidden - self.expert_dim) // (self.n_experts - 1)

    def expert_slices(self) -> list[tuple[int, int]]:
        """Eq. 5: expert k owns hidden units [k*S, k*S + d_expert)."""
        s, e = self.expert_stride, self.expert_dim
        return [(k * s, k * s + e) for k in range(self.n_experts)]

    def temperature_at(self, step: int) -> float:
        """The Gumbel temperature before optimizer step ``step`` (Sec. 3.3): tau_start * tau_decay**step,
        floored at tau_end."""
        return max(self.tau_end, self.tau_start * self.tau_decay ** step)

    def build(self) -> "VersatileFFN":
        self.require_shape()
        return VersatileFFN(self)


class VersatileFFN(DenseFFN):
    def __init__(self, config: VersatileFFNConfig):
        if not isinstance(config, VersatileFFNConfig):
            raise TypeError(f"VersatileFFN expects a VersatileFFNConfig; got {type(config).__name__}")
        self.config = config
        super().__init__(config.d_model, config.d_hidden, norm_eps=config.norm_eps, init_std=config.init_std)
        self.check_finite = config.check_finite
        self.n_experts, self.top_k, self.max_loops, self.mode = (
            config.n_experts, config.top_k, config.max_loops, config.mode)
        self.uses_width = config.mode in ("gated", "width", "ungated")
        self.uses_depth = config.mode in ("gated", "depth", "ungated")
        self.router = nn.Linear(config.d_model, config.n_experts, bias=False) if self.uses_width else None
        self.loop_predictor = nn.Linear(config.d_model, config.max_loops, bias=False) if self.uses_depth else None
        # Eq. 5-6 as a 0/1 matrix [N, d_hidden]: row k marks expert k's hidden units.
        membership = torch.zeros(config.n_experts, config.d_hidden)
        for k, (lo, hi) in enumerate(config.expert_slices()):
            membership[k, lo:hi] = 1.0
        self.register_buffer("expert_membership", membership, persistent=False)
        # experts tile the hidden units exactly (the paper's default): the mask is a per-expert broadcast
        self.experts_tile = (config.expert_stride == config.expert_dim
                             and config.n_experts * config.expert_dim == config.d_hidden)
        # Gumbel temperature: set per optimizer step from the schedule (ffn/temperature.py), never saved
        self.register_buffer("tau", torch.tensor(float(config.temperature_at(0))), persistent=False)
        self.inference_loop_cap: int | None = None  # runtime knob: clip predicted loops at inference
        self.depth_grad = config.depth_grad  # runtime knob: "auto" | "full" | "exact" (module docstring)
        self.last_depth_grad: str | None = None  # what the last training forward ran (FLOP accounting)
        # runtime knob for eval: "compact" (sorted early exit, one host read per layer), "all_loops" (every
        # token runs L_max loops and keeps H^(l_hat): sync-free, fullgraph-compilable), or "auto" =
        # all_loops for 2..eval_all_loops_tokens tokens, compact otherwise
        self.eval_impl = "auto"
        self.eval_all_loops_tokens = 256
        # "auto" depth_grad runs "exact" on CUDA from this many tokens per call (measured: benchmarks/)
        self.exact_min_tokens = 8192
        # sorted-path bucket sizes are rounded up to this many rows (extra rows are computed as in the
        # plain path, with exactly zero gradient): few distinct GEMM shapes, so cuBLAS plans and allocator
        # blocks are reused instead of being created for every new bucket size
        self.row_quantum = 256
        self.reset_head_parameters()
        self.reset_stats()

    # ------------------------------------------------------------------------------------------ set-up

    def reset_head_parameters(self) -> None:
        for head in (self.router, self.loop_predictor):
            if head is not None:
                nn.init.normal_(head.weight, std=self.init_std)

    @classmethod
    def from_dense(cls, config: VersatileFFNConfig, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
                   norm_weight: torch.Tensor) -> "VersatileFFN":
        """Continued pre-training entry point: a dense SwiGLU's weights in HF Llama ``nn.Linear`` layouts.

        w_gate, w_up: [d_hidden, d_model]; w_down: [d_model, d_hidden]; norm_weight: [d_model].
        Router and loop head start freshly initialised; the built module lives on w_gate's device/dtype.
        """
        d, h = config.d_model, config.d_hidden
        expected = {"w_gate": (w_gate, (h, d)), "w_up": (w_up, (h, d)), "w_down": (w_down, (d, h)),
                    "norm_weight": (norm_weight, (d,))}
        for name, (t, shape) in expected.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {shape} for d_model={d}, "
                                 f"d_hidden={h} (nn.Linear layout: gate/up [d_hidden, d_model], "
                                 f"down [d_model, d_hidden])")
        module = cls(config).to(device=w_gate.device, dtype=w_gate.dtype)
        with torch.no_grad():
            module.gate_proj.weight.copy_(w_gate)
            module.up_proj.weight.copy_(w_up)
            module.down_proj.weight.copy_(w_down)
            module.norm.weight.copy_(norm_weight)
        return module

    # ----------------------------------------------------------------------------------- temperature

    def temperature_at(self, step: int) -> float:
        """The schedule's tau before optimizer step ``step``: tau_start * tau_decay**step, floored at tau_end."""
        return self.config.temperature_at(step)

    @torch.no_grad()
    def set_temperature(self, value: float) -> None:
        """Set tau (``ffn.temperature.set_temperature_step`` sets every layer of a model for a step)."""
        self.tau.fill_(value)

    def _apply(self, fn, *args, **kwargs):
        """``.to(bfloat16)`` / ``.half()`` keep tau in fp32: bf16 would round the schedule's values (the steps
        near 5.0 are 8e-4 apart; bf16's spacing there is 3e-2)."""
        tau = self._buffers["tau"]
        out = super()._apply(fn, *args, **kwargs)
        if self._buffers["tau"].dtype != torch.float32:
            self._buffers["tau"] = tau.to(device=self._buffers["tau"].device, dtype=torch.float32)
        return out

    # ------------------------------------------------------------------------------------- statistics

    def reset_stats(self) -> None:
        dev = self.down_proj.weight.device
        self.stats = FFNStats.empty(dev, self.max_loops if self.uses_depth else None,
                                    self.n_experts if self.uses_width else None, has_lambda=True)
        self.last_aux_loss: torch.Tensor | None = None

    @torch.no_grad()
    def _record(self, n: int, loops_n: torch.Tensor | None, lam_n: torch.Tensor | None,
                experts_nk: torch.Tensor | None) -> None:
        if is_recomputing():  # activation checkpointing re-runs the forward: count each token once
            return
        s = self.stats
        dev = self.down_proj.weight.device
        if s.n_tokens.device != dev:
            self.stats = s = s.to(dev)
        s.n_tokens += n
        # comparison counts rather than bincount: no sync, no atomics, static shapes (torch.compile)
        if loops_n is not None:
            s.loop_counts += count_values(loops_n - 1, self.max_loops).to(s.loop_counts)
        if lam_n is not None:
            s.lambda_sum += lam_n.sum().to(s.lambda_sum)
        if experts_nk is not None:
            s.expert_counts += count_values(experts_nk, self.n_experts).to(s.expert_counts)

    # ------------------------------------------------------------------------------------------ paths

    def _width(self, h_nd: torch.Tensor, a_nh: torch.Tensor):
        """Eq. 6-8 through the mask identity: Y_width = H + W_out (a * m). Returns (y, logits, experts)."""
        logits_ne = fp32_logits(h_nd, self.router.weight)  # router sees the un-normalised H (Sec. 3.2)
        _, experts_nk, dense_gates_ne = top_k_gates(logits_ne, self.top_k)
        return h_nd + self.down_proj(self._masked(a_nh, dense_gates_ne)), logits_ne, experts_nk

    def _masked(self, a_nh: torch.Tensor, dense_gates_ne: torch.Tensor) -> torch.Tensor:
        """a * m, m_j = sum of the selected gates of the experts owning hidden unit j."""
        if self.experts_tile:  # m = gate of the unit's one expert: a broadcast, no [n, d_hidden] mask in memory
            n, N = a_nh.shape[0], self.n_experts
            masked_nh = a_nh.view(n, N, self.d_hidden // N) * dense_gates_ne.to(a_nh.dtype).unsqueeze(-1)
            return masked_nh.view(n, self.d_hidden)
        # overlapping windows: units shared by two selected experts get the sum of their gates
        return a_nh * (dense_gates_ne @ self.expert_membership.to(dense_gates_ne.dtype)).to(a_nh.dtype)

    def _loop_sample(self, h_nd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 10 with straight-through: forward value one-hot(argmax), gradient of the soft p."""
        logits_nl = fp32_logits(h_nd, self.loop_predictor.weight)
        gumbel_nl = -torch.empty_like(logits_nl).exponential_().log()
        soft_nl = torch.softmax((logits_nl + gumbel_nl) / self.tau.float(), dim=-1)
        loops_n = soft_nl.argmax(-1) + 1
        hard_nl = torch.nn.functional.one_hot(loops_n - 1, self.max_loops).to(soft_nl.dtype)
        return hard_nl + (soft_nl - soft_nl.detach()), loops_n

    def _predicted_loops(self, h_nd: torch.Tensor) -> torch.Tensor:
        """Inference: l_hat = argmax p (= argmax of the logits; no noise), clipped by the runtime cap."""
        loops_n = fp32_logits(h_nd, self.loop_predictor.weight).argmax(-1) + 1
        if self.inference_loop_cap is not None:
            loops_n = loops_n.clamp(max=self.inference_loop_cap)
        return loops_n

    def _fuse(self, y_width: torch.Tensor, y_depth: torch.Tensor, lam_n: torch.Tensor) -> torch.Tensor:
        # Eq. 3, lambda Y_width + (1 - lambda) Y_depth, as one lerp kernel (fp32 arithmetic inside)
        return torch.lerp(y_depth, y_width, lam_n.to(y_depth.dtype).unsqueeze(-1))

    def _exact_depth_grad(self, h_nd: torch.Tensor) -> bool:
        if self.depth_grad not in DEPTH_GRAD_MODES:
            raise ValueError(f"depth_grad must be one of {DEPTH_GRAD_MODES}; got {self.depth_grad!r}")
        if self.depth_grad == "auto":  # the sorted path reads sizes on the host: not inside a compiled graph
            return h_nd.is_cuda and not torch.compiler.is_compiling() and h_nd.shape[0] >= self.exact_min_tokens
        return self.depth_grad == "exact"

    def _rows(self, k: int, limit: int) -> int:
        """k rounded up to the row quantum, at most limit."""
        q = max(1, self.row_quantum)
        return min(limit, -(-k // q) * q)

    def _depth_states(self, h_nd: torch.Tensor, a_nh: torch.Tensor, read_counts=None) -> list[torch.Tensor]:
        """H^(1..L) (Eq. 9). read_counts: None (every row gets a backward graph) or the deferred read of
        sort_by_loops; rows are then sorted by l_hat (descending) and loop l builds a graph only for the
        n_grad[l] rows with l_hat >= l. The other rows still run loop l (their values feed the loop head's
        straight-through gradient)."""
        n = h_nd.shape[0]
        states = [h_nd + self.down_proj(a_nh)]  # H^(1): every token has l_hat >= 1
        n_grad = None
        if read_counts is not None:  # loop 1 and the width path are queued: reading now leaves no GPU bubble
            counts = read_counts()
            n_grad = [sum(counts[loop:]) for loop in range(len(counts))]  # n_grad[l] = tokens with l_hat >= l
        for loop in range(2, self.max_loops + 1):
            k = n if n_grad is None else self._rows(n_grad[loop], n)
            cur = states[-1]
            if k == n:
                states.append(self.step(cur))
                continue
            parts = [self.step(cur[:k])] if k > 0 else []
            with torch.no_grad():  # tokens with l_hat < loop: dY/dH^(loop) = p_loop * dY = 0
                parts.append(self.step(cur[k:]))
            states.append(torch.cat(parts))
        return states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        h_nd = x.reshape(-1, self.d_model)
        y_nd = self._forward_train(h_nd) if self.training else self._forward_eval(h_nd)
        return y_nd.view_as(x)

    def _forward_train(self, h_nd: torch.Tensor) -> torch.Tensor:
        """Algorithm 1. "full": no host synchronisation, every token runs L_max loops with autograd.
        "exact": tokens sorted by the sampled l_hat, backward graphs only up to each token's l_hat."""
        L = self.max_loops
        p_nl = loops_n = order_n = inverse_n = read_counts = None
        if self.uses_depth:
            p_nl, loops_n = self._loop_sample(h_nd)  # drawn in input order: the same sample either way
            exact = self._exact_depth_grad(h_nd)
            self.last_depth_grad = "exact" if exact else "full"
            if exact:  # the one host read of this layer (bucket sizes) happens inside _depth_states
                order_n, inverse_n, read_counts = sort_by_loops(loops_n, L)
                h_nd, p_nl = permute_rows(h_nd, order_n, inverse_n), permute_rows(p_nl, order_n, inverse_n)
                loops_n = loops_n.index_select(0, order_n)
        a_nh = self.hidden(h_nd)  # loop 1's activations, shared with the width path
        y_width = logits_ne = experts_nk = lam_n = None
        if self.uses_width:
            y_width, logits_ne, experts_nk = self._width(h_nd, a_nh)
        if self.uses_depth:
            y_depth = select_loop_states(self._depth_states(h_nd, a_nh, read_counts), p_nl)  # Eq. 11
            expected_n = (p_nl * torch.arange(1, L + 1, device=p_nl.device, dtype=p_nl.dtype)).sum(-1)  # Eq. 12
            lam_n = (L - expected_n) / L  # Eq. 13
        if self.mode == "gated":
            y_nd = self._fuse(y_width, y_depth, lam_n)
        elif self.mode == "ungated":
            lam_n = torch.full_like(lam_n, 0.5)
            y_nd = self._fuse(y_width, y_depth, lam_n)
        elif self.mode == "width":
            y_nd = y_width
        else:
            y_nd = y_depth
        if order_n is not None:  # back to input order
            y_nd = permute_rows(y_nd, inverse_n, order_n)
        self._record(h_nd.shape[0], loops_n, lam_n.detach() if lam_n is not None else None, experts_nk)
        if self.uses_width and torch.is_grad_enabled():
            aux = switch_balance_loss(logits_ne, experts_nk)
            scaled = self.config.balance_loss_coef * aux
            self.last_aux_loss = scaled.detach()
            y_nd = attach_aux_loss(y_nd, scaled)
        return y_nd

    def _forward_eval(self, h_nd: torch.Tensor) -> torch.Tensor:
        """Discrete early exit + conditional parallelism: each token's output is H^(l_hat) fused with the
        width path for lambda > 0 ("Inference Optimization"), computed by one of two implementations."""
        n = h_nd.shape[0]
        if not self.uses_depth:  # width-only ablation
            y_width, _, experts_nk = self._width(h_nd, self.hidden(h_nd))
            self._record(n, None, None, experts_nk)
            return y_width
        if self.eval_impl not in ("auto", "compact", "all_loops"):
            raise ValueError(f"eval_impl must be 'auto', 'compact' or 'all_loops'; got {self.eval_impl!r}")
        # auto, by the H100 numbers in benchmarks/results: a single token runs fewer loops compacted; 8-64
        # tokens (batched decode) are faster sync-free; prefill (4k-16k tokens) is faster compacted, eager
        # and compiled (there the host read splits the graph)
        all_loops = self.eval_impl == "all_loops" or (
            self.eval_impl == "auto" and 1 < n <= self.eval_all_loops_tokens)
        return self._eval_all_loops(h_nd) if all_loops else self._eval_compact(h_nd)

    def _eval_compact(self, h_nd: torch.Tensor) -> torch.Tensor:
        """Each token runs exactly its l_hat loops: tokens sorted by l_hat (descending) once, loop l runs on
        the prefix that still needs it, the width path only on the suffix with lambda > 0. One host read of
        the bucket sizes per layer, deferred until loop 1 is queued. (Measured faster on the H100 than a
        variant that also queued the router and statistics before the read and padded the buckets to the
        row quantum: benchmarks/results/h100_run2 vs h100_run3.)"""
        n, L = h_nd.shape[0], self.max_loops
        loops_n = self._predicted_loops(h_nd)
        order_n, inverse_n, read_counts = sort_by_loops(loops_n, L)
        h_sorted = h_nd.index_select(0, order_n)
        loops_sorted = loops_n.index_select(0, order_n)
        a_nh = self.hidden(h_sorted)
        cur = h_sorted + self.down_proj(a_nh)
        counts = read_counts()                                # counts[l] = tokens with exactly l loops
        at_least = [sum(counts[l:]) for l in range(L + 2)]    # at_least[l] = tokens with >= l loops
        finished = []
        for loop in range(1, L + 1):
            still_running = at_least[loop + 1]
            finished.append(cur[still_running:])  # tokens whose l_hat == loop
            if still_running == 0:
                break
            cur = self.step(cur[:still_running])
        y_depth = torch.cat(finished[::-1])
        lam_n = (L - loops_sorted).to(torch.float32) / L
        if self.mode == "depth":
            y_sorted, experts_nk = y_depth, None
        else:
            start = at_least[L] if self.mode == "gated" else 0  # gated: lambda = 0 for l_hat = L_max
            if self.mode == "ungated":
                lam_n = torch.full_like(lam_n, 0.5)
            y_width, _, experts_nk = self._width(h_sorted[start:], a_nh[start:])
            y_sorted = torch.cat([y_depth[:start], self._fuse(y_width, y_depth[start:], lam_n[start:])])
        self._record(n, loops_n, lam_n, experts_nk)
        return y_sorted.index_select(0, inverse_n)

    def _eval_all_loops(self, h_nd: torch.Tensor) -> torch.Tensor:
        """Sync-free: every token runs L_max loops and keeps H^(l_hat); the width path runs for every token
        and enters with lambda = 0 where l_hat = L_max (lerp with weight 0 returns Y_depth exactly)."""
        n, L = h_nd.shape[0], self.max_loops
        loops_n = self._predicted_loops(h_nd)
        a_nh = self.hidden(h_nd)
        onehot_nl = (loops_n.unsqueeze(-1) == torch.arange(1, L + 1, device=h_nd.device)).to(h_nd.dtype)
        y_depth = select_loop_states(self._depth_states(h_nd, a_nh), onehot_nl)  # exact: a one-hot contraction
        lam_n = (L - loops_n).to(torch.float32) / L
        experts_nk = None
        if self.mode == "depth":
            y_nd = y_depth
        else:
            if self.mode == "ungated":
                lam_n = torch.full_like(lam_n, 0.5)
            y_width, _, experts_nk = self._width(h_nd, a_nh)
            y_nd = self._fuse(y_width, y_depth, lam_n)
            if self.mode == "gated":  # count width work only where it is used (value N: not counted)
                experts_nk = torch.where((loops_n < L).unsqueeze(-1), experts_nk, self.n_experts)
        self._record(n, loops_n, lam_n, experts_nk)
        return y_nd

    def extra_repr(self) -> str:
        c = self.config
        return (super().extra_repr() + f", n_experts={c.n_experts}, top_k={c.top_k}, d_expert={c.expert_dim}, "
                f"max_loops={c.max_loops}, mode={c.mode!r}")

