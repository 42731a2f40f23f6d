"""The pipeline of one run (BSQ_METHOD.md section 5) as a small trainer with callbacks.

pretrain (or load) -> convert -> BSQ epochs, re-quantizing every ``requant_interval`` ->
final re-quantization -> finetune with the scheme fixed -> evaluate. Persistence, progress
bars, live buffers and checkpoints are callbacks, never branches in this loop.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bsq_engine.core.quantize import (
    bit_report,
    layer_meta,
    prepare_bsq,
    scheme_summary,
    to_fixed_,
)
from bsq_engine.core.regularizer import clip_planes_
from bsq_engine.data import load_dataset
from bsq_engine.training import distributed, fast_path
from bsq_engine.training.allocator import keep_freed_memory
from bsq_engine.training.callbacks import Callback, CallbackList
from bsq_engine.training.checkpoint import optimizer_tensors
from bsq_engine.training.config import RunConfig, Stage
from bsq_engine.training.diagnostics import bench_facts
from bsq_engine.training.distributed import resolve_device
from bsq_engine.training.float_cache import FloatCache
from bsq_engine.training.run_model import build_model, model_from_checkpoint, model_shape
from bsq_engine.training.schemes import plan_scheme, prepare_fixed
from bsq_engine.training.stage_options import freeze_bn_scales_, requantize_stage_

__all__ = ["DivergenceError", "RunStopped", "Trainer", "resolve_device"]


class RunStopped(Exception):
    """The user asked the run to stop; raised between two training steps."""


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


class Trainer:
    """Runs one configured pipeline; ``run()`` returns the final summary dict."""

    def __init__(
        self,
        config: RunConfig,
        callbacks: list[Callback] = (),
        *,
        run_id: str = "",
        stop_event: threading.Event | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.config, self.run_id = config, run_id
        self.callbacks = CallbackList(list(callbacks))
        self.stop_event = stop_event or threading.Event()
        self.float_cache = FloatCache(cache_dir) if cache_dir else None
        self.dist = distributed.current()  # world_size 1 unless started by torchrun
        self.device = distributed.rank_device(resolve_device(config.device), self.dist)
        self.net: nn.Module | None = None  # the model, DDP-wrapped when distributed
        self.stage, self.epoch, self.global_epoch, self.global_step = Stage.PRETRAIN, 0, 0, 0
        self.float_accuracy: float | None = None
        self.model: nn.Module | None = None
        self.memory_format = torch.contiguous_format
        self.optimizer: torch.optim.Optimizer | None = None
        self.started = time.time()
        self.elapsed_before = 0.0  # seconds spent by earlier attempts of a resumed run
        self.pretrain_records: list[dict] = []  # kept with a cached float model
        self.plan: dict | None = None  # fixed-scheme methods: bits per layer and why
        self.quant_stage_accuracy: float | None = None  # end of BSQ / QAT, before finetune
        self.last_test_acc: float | None = None

    # ----------------------------------------------------------------- set-up
    def _load_data(self):
        cfg = self.config
        self.data = load_dataset(
            cfg.dataset, cfg.data_root, download=False,
            max_train=cfg.max_train, max_test=cfg.max_test,
        )  # fmt: skip
        self.steps_per_epoch = math.ceil(len(self.data.train_y) / cfg.batch_size)

    def _new_model(self) -> nn.Module:
        return build_model(self.config, model_shape(self.data.info))

    def _place_model(self) -> None:
        """On the run's device, in the fastest memory format (``fast_path``)."""
        self.memory_format = fast_path.memory_format_for(self.model)
        self.model = self.model.to(self.device, memory_format=self.memory_format)

    def _build_optimizer(self) -> None:
        cfg = self.config
        lr = cfg.lr_at(self.stage, max(self.epoch, 1))
        freeze_bn_scales_(self.model, cfg.fixed_bn_scales and self.stage is Stage.BSQ)
        self.optimizer = fast_path.make_sgd(
            self.model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        # after every change of parameter shapes (stage, requantize, resume): rebuild DDP too
        self.net = distributed.wrap(self.model, self.dist, self.device)

    # -------------------------------------------------------------- the loop
    def run(self, resume: tuple[dict, dict] | None = None) -> dict:
        """Run (or, given a loaded checkpoint ``(tensors, meta)``, continue) the pipeline.

        Freed host memory stays in the process while it runs (``allocator``: no page
        faults per step for memory the previous step returned)."""
        try:
            with keep_freed_memory():
                return self._run(resume)
        finally:  # finished, stopped or failed: callbacks release what they hold
            self.callbacks.trigger("on_teardown", self)

    def _run(self, resume: tuple[dict, dict] | None) -> dict:
        self._load_data()
        position = self._restore(resume) if resume else None
        self.callbacks.trigger("on_run_start", self)
        for stage in self.config.stages:
            if position and self._stage_index(stage) < self._stage_index(position[0]):
                continue
            resumed_mid_stage = position is not None and position[0] == stage
            start_epoch = position[1] + 1 if resumed_mid_stage else 1
            if not resumed_mid_stage:
                self._enter_stage(stage)
            self._run_stage(stage, start_epoch)
            position = None
        return self._finish()

    def _stage_index(self, stage: Stage) -> int:
        return self.config.stages.index(Stage(stage))

    def _enter_stage(self, stage: Stage) -> None:
        cfg, self.stage, self.epoch = self.config, stage, 0
        if stage is Stage.PRETRAIN:
            self.model = self._new_model()
        elif stage is Stage.BSQ:
            self.model = prepare_bsq(self.model, cfg.bsq_config())
        elif stage is Stage.QAT:
            self.plan = plan_scheme(self.model, cfg, self.data, self.device)
            self.model = prepare_fixed(self.model, cfg, self.plan)
        elif stage is Stage.FINETUNE and cfg.method == "bsq":
            self.model = to_fixed_(self.model)
        self._place_model()
        self._build_optimizer()
        self.callbacks.trigger("on_stage_start", self, stage)

    def _run_stage(self, stage: Stage, start_epoch: int) -> None:
        if stage is Stage.PRETRAIN and start_epoch == 1 and self._load_pretrained():
            self.callbacks.trigger("on_stage_end", self, stage)
            return
        for epoch in range(start_epoch, self.config.epochs_of(stage) + 1):
            self._run_epoch(stage, epoch)
        if stage is Stage.PRETRAIN:
            self.float_accuracy = self.evaluate()[1]
            self._save_pretrained()
        elif stage in (Stage.BSQ, Stage.QAT):
            self.quant_stage_accuracy = self.last_test_acc
        self.callbacks.trigger("on_stage_end", self, stage)

    def _run_epoch(self, stage: Stage, epoch: int) -> None:
        self.epoch, self.global_epoch = epoch, self.global_epoch + 1
        lr = self.config.lr_at(stage, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        train = self._train_epoch(stage, lr)
        if stage is Stage.BSQ and self._requant_due(epoch):
            events = requantize_stage_(self.model, self.config, stage.value, epoch)
            self._build_optimizer()  # resized tensors: momentum starts fresh (the reference)
            self.callbacks.trigger("on_requantize", self, [e.to_dict() for e in events])
        test_loss, test_acc = self.evaluate()
        self.last_test_acc = test_acc
        record = {
            "stage": stage.value, "epoch": epoch, "global_epoch": self.global_epoch,
            **train, "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
            "seconds": time.perf_counter() - started,
        }  # fmt: skip
        layers = None
        if stage is Stage.PRETRAIN:
            record.update(avg_bits=None, compression=None)
            self.pretrain_records.append(record)
        else:
            summary = scheme_summary(self.model)
            record.update(avg_bits=summary["avg_bits"], compression=summary["compression"])
            layers = bit_report(self.model, self.config.max_bits)
        self.callbacks.trigger("on_epoch_end", self, record, layers)

    def _requant_due(self, epoch: int) -> bool:
        last = self.config.epochs_of(Stage.BSQ)
        return epoch % self.config.requant_interval == 0 or epoch == last

    def _train_epoch(self, stage: Stage, lr: float) -> dict:
        cfg, model, world = self.config, self.model, self.dist
        model.train()
        use_reg = stage is Stage.BSQ and cfg.alpha > 0
        compile_ = fast_path.compile_wanted(self.device)
        # DDP averages the planes' gradients in backward: their update must wait for that
        in_backward = world.world_size == 1 and not compile_
        with fast_path.planes_sgd_in_backward(model, self.optimizer, in_backward) as updaters:
            # through the DDP wrapper when distributed: gradients are averaged in backward
            forward = fast_path.step_forward(
                self.net, self.memory_format, use_reg, compile_, updaters
            )
            totals, step_ms = self._train_steps(stage, lr, forward, use_reg)
        distributed.sync_buffers_(model, world, self.device)  # BatchNorm stats: one per job
        keys = ("loss", "correct", "n", "reg")  # this rank's shard -> the global batch
        totals = dict(zip(keys, distributed.all_sum([totals[k] for k in keys], world, self.device)))
        n = max(totals["n"], 1)
        reg_mean = totals["reg"] / n
        return {
            "train_loss": totals["loss"] / n, "train_acc": totals["correct"] / n,
            "reg": reg_mean, "alpha_reg": cfg.alpha * reg_mean if use_reg else 0.0,
            "step_ms": statistics.median(step_ms) if step_ms else None,
        }  # fmt: skip

    def _train_steps(self, stage: Stage, lr: float, forward, use_reg: bool):
        """One epoch's steps: ``(totals of this rank's shard, step times in ms)``."""
        cfg, model, world = self.config, self.model, self.dist
        seed = cfg.seed * 100_003 + self.global_epoch  # per-epoch: resume replays the same order
        totals, step_ms = {"loss": 0.0, "correct": 0, "n": 0, "reg": 0.0}, []
        batches = distributed.train_batches(self.data, cfg.batch_size, seed, self.device, world)
        n_batches = len(batches) if hasattr(batches, "__len__") else self.steps_per_epoch
        for batch, (xb, yb) in enumerate(batches, start=1):
            if distributed.any_rank([self.stop_event.is_set()], world, self.device)[0]:
                raise RunStopped(f"stopped by the user at {stage.value} epoch {self.epoch}")
            t0 = time.perf_counter()
            logits, ce, reg = forward(xb, yb)
            loss = ce + cfg.alpha * reg if use_reg else ce
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # may update the planes already (fast_path.planes_sgd_in_backward)
            self.optimizer.step()
            clip_planes_(model)
            loss_value = float(loss.detach())
            self._check_finite(loss_value)
            step_ms.append((time.perf_counter() - t0) * 1000)
            reg_value = float(reg.detach()) if reg is not None else 0.0
            correct = int((logits.detach().argmax(1) == yb).sum())
            self.global_step += 1
            ce_value = loss_value if not use_reg else float(ce.detach())
            totals["loss"] += ce_value * len(yb)
            totals["correct"] += correct
            totals["n"] += len(yb)
            totals["reg"] += reg_value * len(yb)
            self.callbacks.trigger("on_step_end", self, {
                "stage": stage.value, "epoch": self.epoch, "step": self.global_step,
                "loss": loss_value, "ce": ce_value, "reg": reg_value, "lr": lr,
                "batch_acc": correct / len(yb), "step_ms": step_ms[-1],
                "batch": batch, "batches": n_batches,  # progress within the epoch
            })  # fmt: skip
        return totals, step_ms

    def _check_finite(self, loss_value: float) -> None:
        bad = distributed.any_rank([not math.isfinite(loss_value)], self.dist, self.device)[0]
        if not bad:
            return
        cfg = self.config
        lr = cfg.lr_at(self.stage, max(self.epoch, 1))
        raise DivergenceError(
            f"Training diverged: the loss became {loss_value} at {self.stage.value} epoch "
            f"{self.epoch} (alpha={cfg.alpha:g}, lr={lr:g}). "
            "Try a smaller alpha or a smaller learning rate."
        )

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and accuracy (0-1) of the current model."""
        self.model.eval()
        loss, correct = 0.0, 0
        for xb, yb in self.data.test_loader(1024):  # each rank scores its slice, then sums
            xb, yb = distributed.shard(xb, yb, self.dist)
            xb, yb = xb.to(self.device), yb.to(self.device)
            logits = self.model(fast_path.to_memory_format(xb, self.memory_format))
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
        loss, correct = distributed.all_sum([loss, correct], self.dist, self.device)
        n = max(len(self.data.test_y), 1)
        return loss / n, correct / n

    def _finish(self) -> dict:
        self.stage = Stage.DONE
        _, accuracy = self.evaluate()
        summary = scheme_summary(self.model)
        cfg = self.config
        result = {
            "run_id": self.run_id, "model": cfg.model,
            "dataset": cfg.dataset, "method": cfg.method,
            "alpha": cfg.used_alpha,
            "uniform_bits": cfg.uniform_bits if cfg.method == "uniform" else None,
            "float_accuracy": self.float_accuracy, "accuracy": accuracy,
            "avg_bits": summary["avg_bits"], "compression": summary["compression"],
            "seconds": self.elapsed_before + time.time() - self.started,
            "device": str(self.device), "layers": summary["layers"],
        }  # fmt: skip
        result.update(bench_facts(self))
        self.callbacks.trigger("on_finish", self, result)
        return result

    # ------------------------------------------------- float model reuse
    def _load_pretrained(self) -> bool:
        """Skip pretraining when an identical float model is cached (sweeps share one)."""
        use_cache = self.float_cache and self.config.reuse_pretrained  # DDP: rank 0 only
        hit = self.float_cache.load(self.config, self.model) if use_cache else None
        hit = distributed.adopt_from_rank0(self.model, hit, self.dist)
        if hit is None:
            return False
        self.float_accuracy, records = hit
        for record in records:
            self.global_epoch = record["global_epoch"]
            self.epoch = record["epoch"]
            self.callbacks.trigger("on_epoch_end", self, dict(record, reused=True), None)
        self.float_accuracy = self.evaluate()[1]
        return True

    def _save_pretrained(self) -> None:
        # Only a whole, uninterrupted pretraining is worth sharing: a resumed one lacks the
        # curve of its first epochs.
        complete = len(self.pretrain_records) == self.config.pretrain_epochs
        if self.float_cache and self.config.pretrain_epochs > 0 and complete:
            records = self.pretrain_records
            self.float_cache.save(self.config, self.model, self.float_accuracy, records)

    # ------------------------------------------------- checkpoints
    def checkpoint_state(self) -> tuple[dict, dict]:
        """``(tensors, meta)`` for :func:`checkpoint.save_checkpoint`, at an epoch end."""
        names = {p: n for n, p in self.model.named_parameters()}
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(optimizer_tensors(self.optimizer, names))
        meta = {
            "stage": self.stage.value, "epoch": self.epoch, "global_epoch": self.global_epoch,
            "global_step": self.global_step, "float_accuracy": self.float_accuracy,
            "layers": layer_meta(self.model), "config": self.config.to_dict(),
            "elapsed": self.elapsed_before + time.time() - self.started, "format": 1,
            "plan": self.plan, "quant_stage_accuracy": self.quant_stage_accuracy,
        }  # fmt: skip
        return tensors, meta

    def _restore(self, checkpoint: tuple[dict, dict]) -> tuple[Stage, int]:
        tensors, meta = checkpoint
        shape = model_shape(self.data.info)
        self.model = model_from_checkpoint(self.config, shape, tensors, meta)
        self._place_model()
        self.stage, self.epoch = Stage(meta["stage"]), meta["epoch"]
        if self.stage is Stage.DONE:  # died after its final checkpoint: only finish remains
            self.stage = self.config.stages[-1]
            self.epoch = self.config.epochs_of(self.stage)
        self.global_epoch, self.global_step = meta["global_epoch"], meta["global_step"]
        self.float_accuracy, self.elapsed_before = meta["float_accuracy"], meta["elapsed"]
        self.plan, self.quant_stage_accuracy = meta.get("plan"), meta.get("quant_stage_accuracy")
        self._build_optimizer()
        for name, param in self.model.named_parameters():
            buf = tensors.get(f"optim.{name}")
            if buf is not None and buf.shape == param.shape:
                self.optimizer.state[param]["momentum_buffer"] = buf.to(self.device).clone()
        return self.stage, self.epoch

    @property
    def progress(self) -> float:
        """Fraction of planned epochs done (0-1)."""
        done = self.global_epoch
        return min(done / max(self.config.total_epochs, 1), 1.0)
