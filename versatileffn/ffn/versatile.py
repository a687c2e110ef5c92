"""VersatileFFN (Nie et al., arXiv 2512.14531, Sec. 3): width and depth paths that reuse ONE SwiGLU FFN.

Width path (Eq. 4-8): N virtual experts, expert k = hidden units [k*S, k*S + d_expert) of gate_proj/up_proj
and the matching columns of down_proj; top-K routed on the un-normalised H; Y_width = sum_k g_k Y_k.
Depth path (Eq. 9-11): H^(l) = F(H^(l-1)); a loop head picks each token's loop count with a
Gumbel-softmax straight-through sample; Y_depth = sum_l p_l H^(l).
Fusion (Eq. 12-13, 3): ``fusion.width_weight`` (lambda for every mode) and ``fusion.fuse``.

Two identities make this cheaper than the paper's description without changing its function:
* phi acts element-wise on hidden units, so an expert's activations are a slice of the full activations
  a = phi(W_proj RMSNorm(H)), and  sum_k g_k W_out^(k) a[I_k] = W_out (a * m)  with the mask
  m_j = sum_{k selected, j in I_k} g_k. Overlapping windows (d_expert > d_hidden/N) are handled exactly.
* a is also loop 1 of the depth path (H^(0) = H, same norm, same weights), so the width path needs no
  projection of its own into the hidden units.

How it runs (``layer.runtime``, a ``RuntimeOptions``; what it computes never changes):
* training, ``depth_grad``: "full" is Algorithm 1 as written (every token runs L_max loops with autograd);
  "exact" is the engine's training forward (``engine.py``): the same forward values, a backward only up
  to each token's sampled depth (the forward value of p is one-hot, so no gradient flows through later
  loops) - the same gradients to rounding; "auto" = exact where the ragged GEMM runs (CUDA sm_90, bf16).
* eval, ``impl``: "engine" runs each token exactly l_hat loops on a sorted, shrinking prefix of rows whose
  length stays on the device, and the width path only where lambda > 0, as one grouped GEMM over the
  (token, expert) assignments ("Inference Optimization"; no host synchronisation, static shapes, CUDA-graph
  capturable); "plain" does the same with bucket sizes read on the host and the mask identity (the CPU
  default: what the tests compare the engine against); "auto" = engine on CUDA. An eval forward that builds
  an autograd graph runs "plain" (the engine computes in place).
* ``loop_cap`` clips l_hat at inference (a compute / quality trade-off).
``forward(x, loops=...)`` runs given per-token loop counts instead of the loop head's choice (benchmarks and
tests force loop mixes with it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import require
from . import engine
from .common import (FFNBaseConfig, attach_aux_loss, check_sublayer_input, LogitHead, switch_balance_loss,
                     top_k_gates)
from .dense import DenseFFN
from .dense_preserving import LoopGain, WidthMix
from .fast import count_values, is_recomputing, select_loop_states, sort_by_loops
from .fusion import fuse, width_weight
from .runtime import DEPTH_GRAD_MODES, RuntimeOptions, given_loops
from .stats import FFNStats

VERSATILE_MODES = ("gated", "width", "depth", "ungated")


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
    # a deviation from the paper, off by default (ffn/dense_preserving.py): the converted layer computes the dense
    # sublayer exactly at step 0 (loops >= 2 scaled by s * alpha, the width path mixed with the full FFN by gamma)
    dense_preserving: bool = False
    dense_preserving_scale: float = 20.0

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
        require(self.dense_preserving_scale > 0, "dense_preserving_scale", "> 0", self.dense_preserving_scale)

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
    # F's norm sits after W_out in a post-norm sublayer (HF OLMo2): ``output_norm`` applies it, and the width
    # path then normalises each expert's output on its own (the mask identity would be wrong)
    post_norm = False

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
        self.router = LogitHead(config.d_model, config.n_experts) if self.uses_width else None
        self.loop_predictor = LogitHead(config.d_model, config.max_loops) if self.uses_depth else None
        self.width_mix: WidthMix | None = None
        if config.dense_preserving:
            if self.uses_depth:
                self.loop_gain = LoopGain(config.d_model, config.dense_preserving_scale)
            if self.uses_width:
                self.width_mix = WidthMix(config.dense_preserving_scale)
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
        self.runtime = RuntimeOptions(depth_grad=config.depth_grad)
        self.last_depth_grad: str | None = None  # what the last training forward ran (FLOP accounting)
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
        """Per-token values; experts_nk: value n_experts marks an assignment that did not run (not counted)."""
        # comparison counts rather than bincount: no sync, no atomics, static shapes (torch.compile)
        self._record_counts(n, None if loops_n is None else count_values(loops_n - 1, self.max_loops),
                            None if lam_n is None else lam_n.sum(),
                            None if experts_nk is None else count_values(experts_nk, self.n_experts))

    @torch.no_grad()
    def _record_counts(self, n: int, loop_counts: torch.Tensor | None, lambda_sum: torch.Tensor | None,
                       expert_counts: torch.Tensor | None) -> None:
        if is_recomputing():  # activation checkpointing re-runs the forward: count each token once
            return
        s = self.stats
        dev = self.down_proj.weight.device
        if s.n_tokens.device != dev:
            self.stats = s = s.to(dev)
        s.n_tokens += n
        parts = ((s.loop_counts, loop_counts), (s.lambda_sum, lambda_sum), (s.expert_counts, expert_counts))
        for total, part in parts:
            if part is not None:
                total += part.to(total)

    # ------------------------------------------------------------------------------------------ pieces

    def projections_are_plain(self) -> bool:
        """Whether the engine and the post-norm width path may read W_proj / W_out / the norm weight directly. Not
        when a wrapper acts on the module call (a PEFT adapter, accelerate's offload hooks, whose weights sit on
        ``meta`` between calls): then only calling the modules computes the right function."""
        modules = (self.gate_proj, self.up_proj, self.down_proj, self.norm)
        return all(type(m) is nn.Linear for m in modules[:3]) and not any(
            hasattr(m, "_hf_hook") or any(p.is_meta for p in m.parameters(recurse=False)) for m in modules)

    def _route(self, h_nd: torch.Tensor, logits_ne: torch.Tensor | None = None):
        """Eq. 7 on the un-normalised H (Sec. 3.2), fp32 logits -> (logits, gates, experts, dense gates)."""
        if logits_ne is None:
            logits_ne = self.router(h_nd)
        return (logits_ne, *top_k_gates(logits_ne, self.top_k))

    def width_mix_of(self, h_nd: torch.Tensor, delta1_nd: torch.Tensor, gates: torch.Tensor):
        """The dense-preserving width path gamma * H^(1) + (1 - gamma) * (H + sum_k g_k y_k) written as the paper's
        H + sum_k g'_k y_k with H' = H + gamma * ΔF(H) and g' = (1 - gamma) g (the gates sum to 1). delta1: loop 1's
        ΔF(H). -> (H', g'); (H, g) unchanged for the paper's layer."""
        if self.width_mix is None:
            return h_nd, gates
        gamma = self.width_mix()
        return h_nd + gamma.to(delta1_nd.dtype) * delta1_nd, gates * (1.0 - gamma).to(gates.dtype)

    def _width(self, h_nd: torch.Tensor, a_nh: torch.Tensor):
        """Eq. 6-8 on every token from loop 1's activations a. Returns (Y_width, router logits, experts)."""
        logits_ne, _, experts_nk, dense_gates_ne = self._route(h_nd)
        if not self.post_norm:  # the mask identity: Y_width = H + W_out (a * m)
            masked_nh = self._masked(a_nh, dense_gates_ne)
            if self.width_mix is not None:  # W_out (gamma a + (1 - gamma) a * m): one projection still
                gamma = self.width_mix().to(a_nh.dtype)
                masked_nh = gamma * a_nh + (1 - gamma) * masked_nh
            return h_nd + self.down_proj(masked_nh), logits_ne, experts_nk
        if self.width_mix is not None:
            h_nd, dense_gates_ne = self.width_mix_of(h_nd, self.project_out(a_nh), dense_gates_ne)
        # post-norm: sum_k g_k norm(y_k) != norm(sum_k g_k y_k), so every expert's output is normalised on its
        # own: Y_width = H + sum_k g_k norm(W_out^(k) a[I_k]) (gates sum to 1), for all N experts, then gated
        if self.projections_are_plain():
            w_out = self.down_proj.weight
            y_ned = torch.stack([F.linear(a_nh[:, lo:hi], w_out[:, lo:hi]) for lo, hi in self.config.expert_slices()],
                                dim=1)
        else:  # a wrapped W_out is only right when called: every expert's masked activations through it (N x FLOPs)
            y_ned = self.down_proj(a_nh.unsqueeze(1) * self.expert_membership.to(a_nh.dtype))
        normed_ned = self.output_norm(y_ned)
        return h_nd + (dense_gates_ne.to(normed_ned.dtype).unsqueeze(-1) * normed_ned).sum(1), logits_ne, experts_nk

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
        logits_nl = self.loop_predictor(h_nd)
        gumbel_nl = -torch.empty_like(logits_nl).exponential_().log()
        soft_nl = torch.softmax((logits_nl + gumbel_nl) / self.tau.float(), dim=-1)
        loops_n = soft_nl.argmax(-1) + 1
        return self._one_hot(loops_n, soft_nl.dtype) + (soft_nl - soft_nl.detach()), loops_n

    def _one_hot(self, loops_n: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # a comparison, not F.one_hot: that one checks the values on the host (a sync on CUDA)
        steps = torch.arange(1, self.max_loops + 1, device=loops_n.device)
        return (loops_n.unsqueeze(-1) == steps).to(dtype)

    def _predicted_loops(self, h_nd: torch.Tensor, logits_nl: torch.Tensor | None = None) -> torch.Tensor:
        """Inference: l_hat = argmax p (= argmax of the logits; no noise), clipped by the runtime cap."""
        if logits_nl is None:
            logits_nl = self.loop_predictor(h_nd)
        loops_n = logits_nl.argmax(-1) + 1
        if self.runtime.loop_cap is not None:
            loops_n = loops_n.clamp(max=self.runtime.loop_cap)
        return loops_n

    @torch.no_grad()
    def predicted_loops(self, x: torch.Tensor) -> torch.Tensor:
        """The loop count l_hat each token of x [..., d_model] runs in eval mode (shape x.shape[:-1])."""
        return self._predicted_loops(x.reshape(-1, self.d_model)).view(x.shape[:-1])

    # ----------------------------------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, loops: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, d] -> [B, T, d]. loops: per-token loop counts ([B, T] or [B*T], in 1..L_max) to run instead
        of the loop head's choice (training: instead of the sampled depth; the gradient stays the soft p's)."""
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        loops_n = given_loops(loops, x, self.mode, self.max_loops, check_values=self.check_finite)
        h_nd = x.reshape(-1, self.d_model)
        y_nd = self._forward_train(h_nd, loops_n) if self.training else self._forward_eval(h_nd, loops_n)
        return y_nd.view_as(x)

    def _forward_train(self, h_nd: torch.Tensor, given_n: torch.Tensor | None) -> torch.Tensor:
        loops_n = lam_n = None
        if self.mode == "width":
            y_nd, logits_ne, experts_nk = self._width(h_nd, self.hidden(h_nd))
        else:
            p_nl, loops_n = self._loop_sample(h_nd)
            if given_n is not None:  # the given depth as the forward value, the sample's soft gradient
                p_nl, loops_n = self._one_hot(given_n, p_nl.dtype) + (p_nl - p_nl.detach()), given_n
            exact = self.runtime.exact_depth_grad(h_nd) and self.projections_are_plain()
            self.last_depth_grad = "exact" if exact else "full"
            if exact:
                y_nd, lam_n, logits_ne, experts_nk = engine.train_forward(self, h_nd, p_nl, loops_n)
            else:
                y_nd, lam_n, logits_ne, experts_nk = self._train_full(h_nd, p_nl)
        self._record(h_nd.shape[0], loops_n, None if lam_n is None else lam_n.detach(), experts_nk)
        if logits_ne is not None and torch.is_grad_enabled():
            aux = switch_balance_loss(logits_ne, experts_nk)
            scaled = self.config.balance_loss_coef * aux
            self.last_aux_loss = scaled.detach()
            y_nd = attach_aux_loss(y_nd, scaled)
        return y_nd

    def _train_full(self, h_nd: torch.Tensor, p_nl: torch.Tensor):
        """Algorithm 1: every token runs L_max loops with autograd; Y_depth = sum_l p_l H^(l) (Eq. 9, 11)."""
        a_nh = self.hidden(h_nd)  # loop 1's activations, shared with the width path
        states = [h_nd + self.project_out(a_nh)]
        for _ in range(2, self.max_loops + 1):
            states.append(self.loop_step(states[-1]))
        lam_n = width_weight(self.mode, self.max_loops, p_nl)
        y_width = logits_ne = experts_nk = None
        if self.mode != "depth":
            y_width, logits_ne, experts_nk = self._width(h_nd, a_nh)
        return fuse(y_width, select_loop_states(states, p_nl), lam_n), lam_n, logits_ne, experts_nk

    def _forward_eval(self, h_nd: torch.Tensor, given_n: torch.Tensor | None) -> torch.Tensor:
        """Discrete early exit + conditional parallelism ("Inference Optimization"): each token's output is
        H^(l_hat), fused with the width path where lambda > 0."""
        if self.mode == "width":
            y_nd, _, experts_nk = self._width(h_nd, self.hidden(h_nd))
            self._record(h_nd.shape[0], None, None, experts_nk)
            return y_nd
        builds_graph = torch.is_grad_enabled() and (h_nd.requires_grad or self.down_proj.weight.requires_grad)
        if not self.runtime.eval_engine(h_nd) or builds_graph or not self.projections_are_plain():
            loops_n = self._predicted_loops(h_nd) if given_n is None else given_n
            y_nd, lam_n, experts_nk = self._eval_plain(h_nd, loops_n)
            self._record(h_nd.shape[0], loops_n, lam_n, experts_nk)
            return y_nd
        h32_nd = h_nd.float()  # one fp32 copy of H for both heads
        logits_ne = self.router(h32_nd) if self.mode != "depth" else None
        loops_n = self._predicted_loops(h_nd, self.loop_predictor(h32_nd)) if given_n is None else given_n
        y_nd, loop_counts, expert_counts = engine.eval_forward(self, h_nd, loops_n, logits_ne)
        lam_l = width_weight(self.mode, self.max_loops, torch.arange(1, self.max_loops + 1, device=h_nd.device))
        self._record_counts(h_nd.shape[0], loop_counts, None if lam_l is None else (loop_counts * lam_l).sum(),
                            expert_counts)
        return y_nd

    def _eval_plain(self, h_nd: torch.Tensor, loops_n: torch.Tensor):
        """Tokens sorted by l_hat (descending), loop l on the prefix that still needs it, the width path on the
        suffix with lambda > 0; bucket sizes read on the host. -> (Y, lambda, experts)."""
        L = self.max_loops
        order_n, inverse_n, counts = sort_by_loops(loops_n, L)  # counts[l]: tokens with exactly l loops
        h_sorted = h_nd.index_select(0, order_n)
        lam_n = width_weight(self.mode, L, loops_n.index_select(0, order_n))
        at_least = [sum(counts[l:]) for l in range(L + 2)]  # at_least[l]: tokens with >= l loops
        a_nh = self.hidden(h_sorted)
        cur = h_sorted + self.project_out(a_nh)
        finished = []
        for loop in range(1, L + 1):
            still_running = at_least[loop + 1]
            finished.append(cur[still_running:])  # tokens whose l_hat == loop
            if still_running == 0:
                break
            cur = self.loop_step(cur[:still_running])
        y_sorted = torch.cat(finished[::-1])
        experts_nk = None
        if self.mode != "depth":
            start = at_least[L] if self.mode == "gated" else 0  # gated: lambda = 0 for l_hat = L_max
            y_width, _, experts_nk = self._width(h_sorted[start:], a_nh[start:])
            y_sorted = torch.cat([y_sorted[:start], fuse(y_width, y_sorted[start:], lam_n[start:])])
        return y_sorted.index_select(0, inverse_n), lam_n, experts_nk

    def extra_repr(self) -> str:
        c = self.config
        return (super().extra_repr() + f", n_experts={c.n_experts}, top_k={c.top_k}, d_expert={c.expert_dim}, "
                f"max_loops={c.max_loops}, mode={c.mode!r}")
