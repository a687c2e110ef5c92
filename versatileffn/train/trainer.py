"""The trainer: one process or torchrun (DDP / FSDP2), gradient accumulation to a global batch in tokens,
the paper's AdamW + cosine recipe, tau set from the step by an optimizer hook, checkpoints with exact resume.

Run folder (``train.out_dir``):
    config.yaml            the full resolved run config
    metrics.jsonl          one JSON record per logged step / evaluation
    tensorboard/           the same scalars (when tensorboard is installed and train.tensorboard)
    checkpoints/step_N/    training checkpoints (see checkpoint.py), newest ``keep_last``
    final/                 the trained model (``io.save_model``: load with ``io.load_model``; with
                           ``train.hf_model``: ``save_converted``, load with transformers)

``train.hf_model`` continues pre-training a converted Hugging Face model (``versatileffn convert``) instead of
building ``VersatileLM`` from ``model:``; ``models.py`` holds what differs, the loop drives both alike
(``FFNControl``: statistics, aux loss; tau set from the step by an optimizer hook).

Reliability (README): the run folder's rules and lock (``run_folder.py``); resume from the newest checkpoint that
verifies (``checkpoint.find_resume_checkpoint``); nothing is written from NaN/Inf weights or a NaN/Inf loss;
SIGINT / SIGTERM write a checkpoint at the next step boundary and stop (``Interrupted``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path

import torch

from ..console import progress
from ..data.loader import PackedTrainData, check_token_range, val_windows
from ..data.tokens import read_index
from ..errors import Interrupted, UserError
from ..ffn.temperature import attach_temperature_schedule
from . import checkpoint as ckpt
from .checkpoint import TrainingDiverged
from .config import RunConfig, run_config_to_dict
from .distributed import DistInfo, agree, all_reduce_sum, any_rank, barrier, init_distributed, parallelize
from .logger import MetricsLogger
from .models import model_for
from .optim import build_optimizer, lr_at
from .run_folder import RunFolder, StopRequest
from .state_io import TrainerStateIO

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name} but CUDA is not available")
    return torch.device(name)


def micro_batch_seed(seed: int, step: int, first_sequence: int) -> int:
    """A distinct 63-bit seed per (run seed, optimizer step, first global sequence of a micro-batch)."""
    return (seed * 1_000_003 + step * 65_537 + first_sequence) % (2 ** 63 - 1)


def ffn_summary(stats: list[dict]) -> dict:
    """Layer-averaged FFN statistics: executed loops, lambda, expert imbalance, a dense-preserving start's
    scales (absent keys are skipped)."""
    out = {}
    for key, name in (("mean_loops", "loops"), ("mean_lambda", "lambda"), ("expert_imbalance", "expert_imbalance"),
                      ("frac_below_max_loops", "frac_below_max_loops"), ("loop_step_mean", "loop_step"),
                      ("width_gamma", "width_gamma")):
        vals = [s[key] for s in stats if key in s]
        if vals:
            out[name] = sum(vals) / len(vals)
    return out


class Trainer(TrainerStateIO):
    """``Trainer(cfg).train()``. ``resume``: continue the run in ``train.out_dir`` from its newest checkpoint that
    verifies; ``overwrite``: replace a run folder that holds another run (refused otherwise). The run folder is
    locked from here until ``train()`` returns (``close()`` releases it when ``train()`` is never called)."""

    def __init__(self, cfg: RunConfig, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise UserError("--resume continues the run in the folder and --overwrite replaces it: choose one")
        self.cfg = cfg
        t = cfg.train
        self.device = resolve_device(t.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out_dir = Path(t.out_dir)
        self.precision = t.precision if t.precision != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")

        # ---- data (validated before any model memory is spent)
        if not cfg.data.path:
            raise UserError("data.path is empty: point it at a folder made by `versatileffn prepare-data`")
        index = read_index(cfg.data.path)
        self.source = model_for(cfg)
        lim = self.source.limits()
        if index["vocab_size"] > lim["vocab_size"]:
            raise UserError(f"the data's tokenizer {index.get('tokenizer')!r} has {index['vocab_size']} entries but "
                            f"{lim['vocab_name']}={lim['vocab_size']}: {lim['vocab_fix'].format(index['vocab_size'])}")
        if cfg.data.seq_len > lim["max_len"]:
            raise UserError(f"data.seq_len={cfg.data.seq_len} exceeds the model's {lim['max_len_name']}="
                            f"{lim['max_len']}")
        self.data = PackedTrainData(cfg.data.path, cfg.data.seq_len, seed=t.seed, split=cfg.data.train_split)
        val_windows(cfg.data.path, cfg.data.seq_len, cfg.data.seq_len, cfg.data.val_split)  # fail now, not at the end
        for split in (cfg.data.train_split, cfg.data.val_split):  # an id >= vocab: now, not an IndexError mid-step
            check_token_range(cfg.data.path, split, lim["vocab_size"], lim["vocab_name"])
        self.tokenizer_file = Path(cfg.data.path) / "tokenizer.json"
        seqs_per_step, rem = divmod(t.global_batch_tokens, cfg.data.seq_len)
        if rem or seqs_per_step % (t.micro_batch_size * self.dist.world):
            raise UserError(f"train.global_batch_tokens={t.global_batch_tokens} must be a multiple of data.seq_len "
                            f"({cfg.data.seq_len}) x micro_batch_size ({t.micro_batch_size}) x world size "
                            f"({self.dist.world})")
        self.global_seqs = seqs_per_step
        self.accum = seqs_per_step // (t.micro_batch_size * self.dist.world)
        self.total_steps = (t.max_tokens // t.global_batch_tokens) if t.max_tokens is not None else t.max_steps
        if self.total_steps < 1:
            raise UserError(f"train.max_tokens={t.max_tokens} is less than one global batch ({t.global_batch_tokens})")

        # ---- model: identical initialisation on every rank, then per-rank RNG streams (Gumbel noise)
        torch.manual_seed(t.seed)
        self.model = self.source.build(self.device)
        self.fresh_keys: list[str] = []
        self.step = 0
        self.tokens_seen = 0
        self.last_loss: float | None = None
        self.last_val: dict | None = None
        self.last_good_checkpoint: Path | None = None
        self.stop = StopRequest()
        if t.init_from and not resume:
            self.fresh_keys = ckpt.init_from_dense(self.model, t.init_from)

        # ---- the run folder: rules and lock (main rank), agreed by every rank
        self.folder = RunFolder(self.out_dir, resume=resume, overwrite=overwrite)
        refused = None
        if self.dist.is_main:
            try:
                self.folder.open()
            except UserError as exc:
                refused = exc
        message = agree(None if refused is None else str(refused), self.dist)
        if message is not None:
            raise refused if refused is not None else UserError(message)
        try:
            self._finish_init(resume)
        except BaseException:
            self.close()
            raise

    def _finish_init(self, resume: bool) -> None:
        t = self.cfg.train
        state = None
        if resume:
            path, state, skipped = ckpt.find_resume_checkpoint(self.out_dir)
            ckpt.check_state_matches(self.model, state[0], f"checkpoint {path}")
            self.resumed_from = self.last_good_checkpoint = path
        torch.manual_seed(t.seed + 1000003 * self.dist.rank)

        self.wrapped = parallelize(self.source.forward_module(self.model), t.parallel, self.dist, self.device)
        self.optimizer = build_optimizer(self.model, t)
        if state is not None:
            self._restore(*state)
        attach_temperature_schedule(self.optimizer, self.model, self.step)  # tau depends on the step only
        self.forward = torch.compile(self.wrapped) if t.compile else self.wrapped
        barrier(self.dist)  # every rank has read the checkpoint before the main rank changes the folder
        if self.dist.is_main:
            if state is not None:
                for bad, reason in skipped:
                    log.warning("checkpoint %s is corrupt or incomplete (%s); moved aside to %s, resuming from %s "
                                "instead", bad, reason, ckpt.set_aside(bad).name, self.resumed_from)
                self.folder.cut_metrics(state[2].get("metrics_offset"))
                log.info("resuming %s from %s (step %d of %d)", self.out_dir, self.resumed_from, self.step,
                         self.total_steps)
            self.folder.write_config(run_config_to_dict(self.cfg), self.step if resume else None,
                                     previous=state[2].get("config") if state is not None else None)
        self.logger = MetricsLogger(self.out_dir, tensorboard=t.tensorboard, wandb=t.wandb,
                                    wandb_project=t.wandb_project, config=run_config_to_dict(self.cfg),
                                    enabled=self.dist.is_main)

    def close(self) -> None:
        """Release the run folder's lock (``train()`` does it when it returns)."""
        if getattr(self, "folder", None) is not None:
            self.folder.close()

    # ------------------------------------------------------------------------------------ loop pieces

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync_context(self, last_micro: bool):
        """Gradient all-reduce only on the last micro-batch of a step (DDP no_sync / FSDP2 flag)."""
        if not self.dist.enabled:
            return contextlib.nullcontext()
        if self.cfg.train.parallel == "ddp":
            return contextlib.nullcontext() if last_micro else self.wrapped.no_sync()
        self.wrapped.set_requires_gradient_sync(last_micro)  # the FSDP root (LMForward for an HF model)
        return contextlib.nullcontext()

    def _check_finite(self, loss: float, what: str = "loss") -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{what} is {loss} at step {self.step}: training stopped, nothing was written "
                                   f"from it; {self._last_good()} (lower train.lr or check the data)")

    def train_step(self) -> dict:
        t = self.cfg.train
        lr = lr_at(self.step, self.total_steps, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.reset_ffn_stats()
        loss_sum = torch.zeros((), device=self.device)
        aux_sum = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y = self.data.micro_batch(self.step, self.global_seqs, self.dist.rank, self.dist.world, micro,
                                         t.micro_batch_size)
            # The Gumbel loop samples depend on (seed, step, global position of this micro-batch) only, so runs
            # on 1 or N GPUs with the same global batch and micro-batch size draw identical noise (and resume
            # is exact whatever the world size).
            torch.manual_seed(micro_batch_seed(t.seed, self.step,
                                               self.dist.rank * (self.global_seqs // self.dist.world)
                                               + micro * t.micro_batch_size))
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self._sync_context(micro == self.accum - 1), self.autocast():
                out = self.forward(x, y)
            # The balance loss rides on the forward through autograd with weight 1 per backward, so the
            # LM loss is NOT pre-divided by accum; the summed gradients are averaged below instead.
            out.loss.backward()
            loss_sum += out.loss.detach()
            if out.aux_loss is not None:
                aux_sum += out.aux_loss.float()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.accum > 1:
            for p in params:
                p.grad.div_(self.accum)
        if t.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += t.global_batch_tokens
        return {"loss": loss_sum / self.accum, "aux_loss": aux_sum / self.accum, "grad_norm": grad_norm, "lr": lr}

    def _log_record(self, out: dict, tokens_per_s: float) -> dict:
        """The one host sync of a logged step: loss (averaged over ranks), grad norm, FFN statistics."""
        loss = all_reduce_sum(out["loss"].detach().clone(), self.dist) / self.dist.world
        grad_norm = out["grad_norm"]
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        rec = {"kind": "train", "step": self.step, "tokens": self.tokens_seen, "loss": float(loss),
               "aux_loss": float(out["aux_loss"]), "lr": out["lr"], "grad_norm": float(grad_norm),
               "tokens_per_s": tokens_per_s}
        taus = [float(m.tau) for m in self.model.versatile_layers()]
        if taus:
            rec["tau"] = taus[0]
        rec.update(ffn_summary(self.model.ffn_stats()))
        return rec

    # ------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, max_tokens: int | None = None) -> dict:
        """Validation loss (mean per token) on the first eval_tokens of the val split, in eval mode (each token
        runs its predicted loops), plus the FFN statistics measured on it (for the FLOPs of Table 2)."""
        seq_len = self.cfg.data.seq_len
        windows = val_windows(self.cfg.data.path, seq_len, max_tokens or self.cfg.train.eval_tokens,
                              self.cfg.data.val_split)
        mine = windows[self.dist.rank::self.dist.world]
        bs = self.cfg.train.micro_batch_size
        # every rank runs the same number of forwards (FSDP2 all-gathers inside them); padding batches weigh 0
        n_batches = math.ceil(math.ceil(len(windows) / self.dist.world) / bs)
        self.wrapped.eval()
        self.model.reset_ffn_stats()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for b in range(n_batches):
            chunk = mine[b * bs:(b + 1) * bs]
            weight = 1.0 if len(chunk) else 0.0
            if not len(chunk):
                chunk = windows[:1]
            chunk = chunk.to(self.device)
            with self.autocast():
                out = self.wrapped(chunk[:, :-1], chunk[:, 1:])
            n = chunk[:, 1:].numel()
            sums[0] += weight * out.loss.double() * n
            sums[1] += weight * n
        stats = self.model.ffn_stats()
        hist = [s["loop_histogram"] for s in stats if "loop_histogram" in s]
        self.wrapped.train()
        all_reduce_sum(sums, self.dist)
        rec = {"kind": "val", "step": self.step, "val_loss": float(sums[0] / sums[1]), "val_tokens": int(sums[1])}
        if hist:  # executed loops over all layers and tokens (eval mode = discrete early exit)
            h = all_reduce_sum(torch.tensor(hist, dtype=torch.float64, device=self.device).sum(0), self.dist)
            total = float(h.sum())
            rec["val_mean_loops"] = float((h * torch.arange(1, len(h) + 1, device=h.device)).sum()) / total
            rec["val_frac_below_max_loops"] = float(h[:-1].sum()) / total
        lam = [s["mean_lambda"] for s in stats if "mean_lambda" in s]
        if lam:
            rec["val_mean_lambda"] = sum(lam) / len(lam)
        self.model.reset_ffn_stats()
        return rec

    # ------------------------------------------------------------------------------------ main loop

    def train(self, until_step: int | None = None) -> dict:
        """Train to the end of the budget (or stop early at ``until_step``, e.g. to test resume). SIGINT / SIGTERM
        write a checkpoint at the next step boundary and raise ``Interrupted`` naming it."""
        if self.dist.is_main:
            self.folder.lock.acquire()  # again, when train() is called a second time
        try:
            with self.stop:
                return self._train(until_step)
        except (Interrupted, TrainingDiverged):
            self.logger.close()  # the run stops here: flush TensorBoard / W&B
            raise
        finally:
            self.close()

    def _train(self, until_step: int | None) -> dict:
        t = self.cfg.train
        stop = self.total_steps if until_step is None else min(until_step, self.total_steps)
        self.wrapped.train()
        bar = progress(total=self.total_steps, initial=self.step, desc="training", unit="step",
                       enabled=t.progress and self.dist.is_main)
        last_time, last_tokens = time.perf_counter(), self.tokens_seen
        rec = None
        try:
            while self.step < stop:
                out = self.train_step()
                final_step = self.step == stop
                if self.step % t.log_every == 0 or final_step or (t.ckpt_every and self.step % t.ckpt_every == 0):
                    now = time.perf_counter()
                    tps = (self.tokens_seen - last_tokens) / max(now - last_time, 1e-9)
                    last_time, last_tokens = now, self.tokens_seen
                    rec = self._log_record(out, tps)
                    self._check_finite(rec["loss"])  # before any checkpoint: a diverged model is never saved
                    self.last_loss = rec["loss"]
                    self.logger.log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{tps:,.0f}")
                bar.update(1)
                if final_step:
                    break
                if t.eval_every and self.step % t.eval_every == 0:
                    self._log_val(self.evaluate())
                if t.ckpt_every and self.step % t.ckpt_every == 0:
                    self.save_checkpoint()
                self._stop_if_signalled()
        finally:
            bar.close()
        if self.step < self.total_steps:  # stopped early (until_step): a checkpoint to resume from
            self.save_checkpoint()
        elif rec is not None or not (self.out_dir / "final").is_dir():
            self._finish(ran=rec is not None)
        return {"step": self.step, "tokens_seen": self.tokens_seen, "val": self.last_val, "loss": self.last_loss}

    def _finish(self, ran: bool) -> None:
        """The end of the budget: validate (a finite loss, or nothing is written), checkpoint, final model. A run
        resumed from its last checkpoint that never wrote ``final/`` writes it from the stored validation."""
        if ran or self.last_val is None:
            self._log_val(self.evaluate())
            self.save_checkpoint()
        self.save_final(extra={"val": self.last_val})
        self.logger.close()

    def _log_val(self, val: dict) -> None:
        self._check_finite(val["val_loss"], "the validation loss")
        self.last_val = val
        self.logger.log(val)

    def _stop_if_signalled(self) -> None:
        signum = self.stop.signum
        if self.dist.enabled:  # every rank stops at the same step
            signum = any_rank(signum or 0, self.dist, self.device) or None
        if signum is None:
            return
        last = self.last_good_checkpoint
        path = last if last is not None and last.name == f"step_{self.step:07d}" else self.save_checkpoint()
        path = path or self.out_dir / ckpt.CKPT_DIR / f"step_{self.step:07d}"
        name = signal.Signals(signum).name
        raise Interrupted(f"stopped by {name} at step {self.step} of {self.total_steps}: checkpoint written to "
                          f"{path}; continue with: versatileffn train --out {self.out_dir} --resume", signum)
