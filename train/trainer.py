"""Camera-controlled image-to-video training (RealCam-I2V, CamI2V, CameraCtrl, MotionCtrl) with Accelerate.

One Accelerate loop in the style of the diffusers training examples. The DynamiCrafter backbone is frozen
(requires_grad False; its Dropout modules in eval mode); only the camera plug-in trains (AdamW, no scheduler).
Run folder and command line: see train/training-contract.md. Randomness of a step (VAE posterior sample, CFG
dropout, timesteps, noise) comes from a generator seeded by (seed, rank, micro-step), data randomness from
(seed, epoch, index), and the checkpoint stores the sampler position, the micro-step and Accelerate's RNG states,
so a resumed run reproduces the uninterrupted one exactly.

metrics.jsonl is appended: after a resume the steps after the checkpoint are logged again (a
``{"event": "resume", "step": N}`` line marks it); readers keep the last line of each step.

Faults (issue 12): an optimizer step whose loss or gradients are non-finite on any rank makes no update (it
still counts as a step; ``step_skipped`` and ``nonfinite_steps`` in metrics.jsonl and trainer_state.json), and
``optim.max_nonfinite_steps`` of them in a row stop the run with a :class:`TrainingError`. Under DeepSpeed the
engine's own overflow check skips the step (switched on in fp32 too). A checkpoint is never written from
non-finite plug-in weights. Resume verifies the newest checkpoint (:func:`verify_checkpoint`) and falls back to
the newest intact one; damaged ones are renamed ``damaged-step-NNNNNNN`` so that neither a resume nor the
checkpoint limit counts them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from annotate.camera import c2w_to_w2c, intrinsics_to_normalized
from annotate.config import ConfigError, dump_yaml
from annotate.files import atomic_write_text
from annotate.log import get_logger, progress_bar, setup_logging
from annotate.provenance import TRAIN_PACKAGES, versions

from .build import build_backbone, build_plugin, dropout_off, freeze
from .camera import CameraControlledUNet, count_parameters
from .camera.modes import concat_condition, plugin_metadata
from .config import TrainConfig, ValidationConfig
from .data import CameraVideoDataset, ResumableSampler, collate, to_unit_range
from .run_folder import CKPT_RE, PLUGIN_FILE, STATE_FILE, resolve_resume

log = get_logger("train")

class TrainingError(RuntimeError):
    """The run cannot go on (non-finite steps in a row, non-finite weights); the message is one line."""


def step_seed(seed: int, rank: int, micro_step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, micro_step]).generate_state(1, np.uint64)[0] % (2**63))


# ------------------------------------------------------------------------------------------------ trainer


class Trainer:
    """One training run: ``Trainer(cfg).train()``. Construction checks the run folder, starts Accelerate, writes
    config.yaml, builds the frozen backbone with the trainable plug-in and the data, and prepares the engine."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.run.output_dir)
        damaged: list[tuple[Path, str]] = []
        self.resume_from = resolve_resume(cfg, damaged)  # every rank checks before anyone writes
        self.accelerator = self._start_accelerator()
        self.is_ds = self.accelerator.state.deepspeed_plugin is not None
        acc = self.accelerator
        setup_logging(default=logging.INFO, main_process=acc.is_main_process,
                      rank=acc.process_index if acc.num_processes > 1 else None)
        if acc.is_main_process:
            self._prepare_run_folder(damaged)
        acc.wait_for_everyone()
        self._set_runtime()
        self._build_model()
        self._build_data()
        self._prepare_engine()
        from .cache import EncoderCache

        self.cache = EncoderCache(cfg.run.cache_dir) if cfg.run.cache_dir else None
        self._const: dict[str, torch.Tensor] = {}
        self.global_step = 0
        self.micro_step = 0
        self.skipped = 0
        self.nonfinite_steps = 0  # optimizer steps skipped for a non-finite loss or gradient
        self.nonfinite_in_a_row = 0
        self.last_checkpoint: Path | None = self.resume_from

    def _start_accelerator(self):
        """Accelerate with DeepSpeed from run.deepspeed (unless `accelerate launch` configured it) and the
        trackers asked for."""
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, ProjectConfiguration

        cfg = self.cfg
        ga = cfg.optim.gradient_accumulation_steps
        ds_plugin = None
        env_ds = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        if cfg.run.deepspeed and not env_ds:
            ds_plugin = DeepSpeedPlugin(hf_ds_config=cfg.run.deepspeed, gradient_accumulation_steps=ga,
                                        gradient_clipping=cfg.optim.max_grad_norm)
        trackers = []
        if cfg.run.tensorboard:
            trackers.append("tensorboard")
        if cfg.run.wandb:
            try:
                import wandb  # noqa: F401

                trackers.append("wandb")
            except ImportError:
                log.warning("run.wandb=true but wandb is not installed: not logging to wandb")
        return Accelerator(
            gradient_accumulation_steps=ga, mixed_precision=cfg.run.mixed_precision, log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "tensorboard")),
            deepspeed_plugin=ds_plugin,
            # without cpu=True Accelerate ignores torchrun's WORLD_SIZE on a CPU-only machine (gloo DDP tests)
            cpu=not torch.cuda.is_available() and ds_plugin is None and not env_ds)

    def _prepare_run_folder(self, damaged: list[tuple[Path, str]]) -> None:
        """Main process: set damaged checkpoints aside, clear the folder for overwrite=true, write config.yaml."""
        cfg, acc = self.cfg, self.accelerator
        for path, why in damaged:  # out of the way of resume and of checkpoints_total_limit, kept for a look
            aside = path.with_name(f"damaged-{path.name}")
            log.warning("checkpoint %s is damaged (%s): renamed %s, resuming from %s", path, why, aside.name,
                        self.resume_from.name)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
        if self.resume_from is None and cfg.resume == "none" and self.out.exists():
            shutil.rmtree(self.out)  # overwrite=true (checked above)
        self.out.mkdir(parents=True, exist_ok=True)
        meta = {"meta": {"versions": versions(TRAIN_PACKAGES, skip_missing=True), "world_size": acc.num_processes,
                         "deepspeed": self.is_ds}}
        atomic_write_text(self.out / "config.yaml", dump_yaml(cfg) + yaml.safe_dump(meta, sort_keys=False))

    def _set_runtime(self) -> None:
        """TF32, CPU threads and the global seeds (seed + rank, as the reference)."""
        from accelerate.utils import set_seed

        cfg, acc = self.cfg, self.accelerator
        if cfg.run.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if cfg.run.cpu_threads and acc.device.type == "cpu":
            torch.set_num_threads(cfg.run.cpu_threads)
        set_seed(cfg.run.seed + acc.process_index)  # reference: seed + rank

    def _build_model(self) -> None:
        """Frozen backbone in the compute dtype, trainable plug-in (fp32: AMP master weights), AdamW."""
        cfg, acc = self.cfg, self.accelerator
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.run.mixed_precision, torch.float32)
        scratch = self.out / ".scratch" / f"rank{acc.process_index}"
        self.backbone = build_backbone(cfg, scratch)
        freeze(self.backbone)
        self.plugin = build_plugin(self.backbone, cfg.camera)
        self.model = CameraControlledUNet(self.backbone.unet, self.plugin)
        trainable, _ = count_parameters(self.plugin)
        unet_frozen = sum(p.numel() for p in self.backbone.unet.parameters())
        enc_frozen = sum(p.numel() for p in self.backbone.parameters()) - unet_frozen
        acc.print(f"camera plug-in {cfg.camera.kind}: trainable {trainable:,} parameters; frozen {unet_frozen:,} "
                  f"(UNet) + {enc_frozen:,} (VAE, CLIP, Resampler)")
        self.params = [p for p in self.plugin.parameters() if p.requires_grad]
        # Frozen parts in the compute dtype (diffusers examples); the plug-in stays fp32 (AMP master weights).
        self.backbone.to(acc.device, dtype=self.weight_dtype)
        self.backbone.schedule.float()
        self.plugin.to(acc.device)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                           weight_decay=cfg.optim.weight_decay, eps=cfg.optim.eps)

    def _build_data(self) -> None:
        """Datasets and our own rank-sharded resumable sampler (not prepared, so the order is exactly ours)."""
        cfg, acc = self.cfg, self.accelerator
        # uint8 training videos: the loader workers skip the float conversion, _encode scales on the device
        self.train_set = CameraVideoDataset(cfg.data, train=True, seed=cfg.run.seed, modes=cfg.modes, uint8=True)
        self.val_set = CameraVideoDataset(cfg.data, train=False, seed=cfg.run.seed)
        if len(self.train_set) == 0:
            raise RuntimeError(f"no kept clips of split {cfg.data.split!r} in {cfg.data.annotation_dir}")
        self.sampler = ResumableSampler(len(self.train_set), cfg.run.batch_size, acc.process_index,
                                        acc.num_processes, cfg.run.seed)
        acc.print(f"data: {len(self.train_set)} train clips ({self.sampler.batches_per_epoch} batches/epoch/rank), "
                  f"{len(self.val_set)} validation clips")

    def _prepare_engine(self) -> None:
        """``accelerator.prepare`` (DDP or DeepSpeed), training flags, checkpoint hooks, trackers."""
        cfg, acc = self.cfg, self.accelerator
        if self.is_ds:
            dsc = acc.state.deepspeed_plugin.deepspeed_config
            dsc["train_micro_batch_size_per_gpu"] = cfg.run.batch_size
            dsc["gradient_clipping"] = cfg.optim.max_grad_norm
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        if self.is_ds and hasattr(self.model.optimizer, "check_grad_overflow"):
            # ZeRO checks gradients for inf/NaN only in fp16/bf16; in fp32 too, a non-finite step must be skipped
            self.model.optimizer.check_grad_overflow = True
        self.model.train()
        self.backbone.unet.train()  # training flag drives gradient checkpointing; dropout stays off
        dropout_off(self.backbone.unet)
        zero = getattr(self.model, "zero_optimization_stage", lambda: None)()
        acc.print(f"engine: {type(self.model).__name__} zero_stage={zero} processes={acc.num_processes} "
                  f"distributed={acc.distributed_type.value} mixed_precision={acc.mixed_precision}")
        acc.register_save_state_pre_hook(self._save_hook)
        acc.register_load_state_pre_hook(self._load_hook)
        if acc.is_main_process:
            acc.init_trackers("realcam", config={k: v for k, v in _flat(cfg).items()})

    # -------------------------------------------------------------------------------- checkpoint hooks
    def _save_hook(self, models, weights, output_dir):
        if self.accelerator.is_main_process:
            from safetensors.torch import save_file

            plugin = self.accelerator.unwrap_model(self.model).plugin
            save_file({k: v.detach().float().cpu().contiguous() for k, v in plugin.state_dict().items()},
                      str(Path(output_dir) / PLUGIN_FILE), metadata=plugin_metadata(self.cfg))
        weights.clear()  # the frozen backbone is not saved; plugin.safetensors holds the trainable weights

    def _load_hook(self, models, input_dir):
        from safetensors.torch import load_file

        if not self.is_ds:
            plugin = self.accelerator.unwrap_model(self.model).plugin
            sd = load_file(str(Path(input_dir) / PLUGIN_FILE))
            plugin.load_state_dict({k: v.to(plugin.state_dict()[k].dtype) for k, v in sd.items()})
        models.clear()

    def _nonfinite_weights(self) -> list[str]:
        """Names of plug-in tensors with inf/NaN; every rank returns the same answer (flag all-reduced)."""
        plugin = self.accelerator.unwrap_model(self.model).plugin
        bad = [k for k, v in plugin.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        flag = torch.tensor(float(len(bad)), device=self.accelerator.device)
        if int(self.accelerator.reduce(flag, "sum").item()) and not bad:
            bad = ["(on another rank)"]
        return sorted(bad)

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        root = self.out / "checkpoints"
        final = root / f"step-{self.global_step:07d}"
        tmp = root / f".tmp-step-{self.global_step:07d}"
        bad = self._nonfinite_weights()
        if bad:  # checked before anything is written or rotated: good checkpoints stay
            raise TrainingError(f"plug-in weights are non-finite at step {self.global_step} ({len(bad)} tensors, "
                                f"first: {bad[0]}); checkpoint {final.name} not written; newest good checkpoint: "
                                f"{self.last_checkpoint or 'none'}")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"global_step": self.global_step, "micro_step": self.micro_step, "skipped": self.skipped,
                     "nonfinite_steps": self.nonfinite_steps, "nonfinite_in_a_row": self.nonfinite_in_a_row,
                     "sampler": self.sampler.state_dict(), "world_size": acc.num_processes,
                     # sizes of every file, so that a resume can tell a truncated or missing one
                     "files": {f.relative_to(tmp).as_posix(): f.stat().st_size
                               for f in sorted(tmp.rglob("*")) if f.is_file()}}
            (tmp / STATE_FILE).write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            limit = self.cfg.run.checkpoints_total_limit
            if limit:
                done = sorted(p for p in root.iterdir() if CKPT_RE.match(p.name))
                for old in done[:-limit]:
                    shutil.rmtree(old)
            log.info("saved %s", final)
        acc.wait_for_everyone()
        self.last_checkpoint = final
        return final

    def load_checkpoint(self, path: Path) -> None:
        try:
            self.accelerator.load_state(str(path))
        except Exception as e:  # noqa: BLE001  verified beforehand; what is left is a mismatch with this config
            raise ConfigError(f"cannot resume from {path}: {e.__class__.__name__}: {str(e).splitlines()[0]}") \
                from e
        state = json.loads((path / STATE_FILE).read_text())
        if state.get("world_size", 1) != self.accelerator.num_processes:
            log.warning("resuming a %s-process checkpoint on %s processes: the data order changes",
                        state.get("world_size"), self.accelerator.num_processes)
        self.global_step, self.micro_step = state["global_step"], state["micro_step"]
        self.skipped = state.get("skipped", 0)
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        self.nonfinite_in_a_row = state.get("nonfinite_in_a_row", 0)
        self.sampler.load_state_dict(state["sampler"])
        self.accelerator.print(f"resumed from {path} at step {self.global_step}")

    # -------------------------------------------------------------------------------- conditioning
    @torch.no_grad()
    def _const_embed(self, name: str) -> torch.Tensor:
        if name not in self._const:
            bb = self.backbone
            if name == "text":
                self._const[name] = bb.get_learned_conditioning([""])[0]
            else:  # CLIP tokens of the all-zero image (dropped image condition)
                size = bb.cfg.image_encoder.image_size
                self._const[name] = bb.image_encoder(torch.zeros(1, 3, size, size, device=bb.device,
                                                                 dtype=self.weight_dtype))[0]
        return self._const[name]

    @torch.no_grad()
    def _encode(self, batch: dict) -> dict[str, torch.Tensor]:
        """Frozen encoders per sample (through the cache when enabled): VAE posterior moments, CLIP image tokens
        of the condition frame, text embedding."""
        bb, acc = self.backbone, self.accelerator
        b, _, f, h, w = batch["video"].shape
        keys, out = [None] * b, [None] * b
        if self.cache is not None:
            from .cache import sample_key

            for i in range(b):
                keys[i] = sample_key(bb.cfg.name, batch["clip_id"][i], batch["frame_indices"][i].tolist(), (h, w),
                                     int(batch["cond_index"][i]), batch["caption"][i])
                out[i] = self.cache.get(keys[i])
        todo = [i for i in range(b) if out[i] is None]
        if todo:  # only cache misses go to the device and the encoders; uint8 (training) or [-1, 1] video
            x = to_unit_range(batch["video"][todo].to(acc.device)).to(self.weight_dtype)
            dist = bb.vae.encode(x.transpose(1, 2).flatten(0, 1)).latent_dist
            mean = dist.mean.view(len(todo), f, *dist.mean.shape[1:]).transpose(1, 2)
            std = dist.std.view(len(todo), f, *dist.std.shape[1:]).transpose(1, 2)
            cond = torch.stack([x[j, :, int(batch["cond_index"][i])] for j, i in enumerate(todo)])
            tokens = bb.image_encoder(cond)
            text = bb.get_learned_conditioning([batch["caption"][i] for i in todo])
            for j, i in enumerate(todo):
                out[i] = {"mean": mean[j], "std": std[j], "image_tokens": tokens[j], "text": text[j]}
                if self.cache is not None:
                    self.cache.put(keys[i], out[i])
        return {k: torch.stack([o[k].to(acc.device, self.weight_dtype) for o in out]) for k in out[0]}

    def compute_loss(self, batch: dict, gen: torch.Generator, model=None) -> torch.Tensor:
        cfg, bb, acc = self.cfg, self.backbone, self.accelerator
        model = model or self.model
        enc = self._encode(batch)
        b, _, f, h, w = batch["video"].shape
        dev = acc.device
        noise_z = torch.randn(enc["mean"].shape, generator=gen).to(dev)
        z = (enc["mean"].float() + enc["std"].float() * noise_z) * bb.cfg.vae.scale_factor
        cond_idx = batch["cond_index"].to(dev)
        # the sample's concatenation mode decides which clean latent frames are given (train/camera/modes.py)
        concat = concat_condition(z, cond_idx, batch["mode"].to(dev), batch["num_given"].to(dev))
        # CFG dropout (as the authors' training): one r per sample; text dropped if r < 2p, image if p <= r < 3p.
        p = cfg.optim.uncond_prob
        r = torch.rand(b, generator=gen).to(dev)
        drop_text = (r < 2 * p)[:, None, None]
        drop_image = ((r >= p) & (r < 3 * p))[:, None, None]
        with torch.no_grad():
            text = torch.where(drop_text, self._const_embed("text")[None], enc["text"])
            tokens = torch.where(drop_image, self._const_embed("image")[None], enc["image_tokens"])
            image = bb.image_proj_model(tokens.to(self.weight_dtype))
        context = torch.cat([text.to(image.dtype), image], dim=1)
        fs = (batch["stride"] if cfg.model.fs_type == "fs" else batch["fps"]).to(dev)
        t = torch.randint(0, bb.schedule.num_timesteps, (b,), generator=gen).to(dev)
        noise = torch.randn(z.shape, generator=gen).to(dev)
        model_dtype = self.weight_dtype if self.is_ds else torch.float32
        c2w, intr = batch["c2w"].to(dev), batch["intrinsics"].to(dev)

        def model_fn(x_t, t_):
            x = torch.cat([x_t, concat], dim=1).to(model_dtype)
            return model(x, t_, context.to(model_dtype), fs, c2w, intr, (h, w), gen)

        loss, _ = bb.schedule.training_loss(model_fn, z, t=t, noise=noise)
        return loss

    # -------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
            self._metrics({"event": "resume", "step": self.global_step})
        if self.cache is not None and cfg.run.cache_epochs:
            self.precompute_cache(cfg.run.cache_epochs)
        loader = DataLoader(self.train_set, batch_size=cfg.run.batch_size, sampler=self.sampler, collate_fn=collate,
                            num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(), drop_last=True)
        with progress_bar("train", cfg.run.max_steps, enabled=cfg.run.progress and acc.is_local_main_process,
                          completed=self.global_step, transient=False) as bar:
            last = self._loop(loader, bar)
        acc.end_training()
        return last or {}

    def _loop(self, loader: DataLoader, bar) -> dict | None:
        """Optimizer steps until run.max_steps, with logging, validation and checkpoints; the last logged row."""
        cfg, acc = self.cfg, self.accelerator
        global_batch = cfg.run.batch_size * acc.num_processes * acc.gradient_accumulation_steps
        last = None
        t_step = time.perf_counter()
        losses, clip_ids = [], []
        while self.global_step < cfg.run.max_steps:
            for batch in loader:
                epoch = self.sampler.epoch
                self.sampler.advance()
                self.skipped += int(acc.reduce(batch["skipped"].sum().to(acc.device), "sum"))
                gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, acc.process_index, self.micro_step))
                self.micro_step += 1
                clip_ids += batch["clip_id"]
                with acc.accumulate(self.model):
                    loss = self.compute_loss(batch, gen)
                    acc.backward(loss)  # DeepSpeed also steps here at the boundary, skipping non-finite gradients
                    grad_norm, skip = None, False
                    if acc.sync_gradients:
                        if not self.is_ds:
                            grad_norm = acc.clip_grad_norm_(self.params, cfg.optim.max_grad_norm)
                        skip = self._nonfinite_step(losses + [loss.detach()], grad_norm)
                    if not skip or acc.scaler is not None:  # fp16: the GradScaler skips it and lowers its scale
                        self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach())
                if not acc.sync_gradients:
                    continue
                if self.is_ds:
                    grad_norm = self.model.get_global_grad_norm()
                self.global_step += 1
                now = time.perf_counter()
                sps = global_batch / max(now - t_step, 1e-9)
                t_step = now
                mean_loss = acc.reduce(torch.stack(losses).mean(), "mean").item()
                last = {"step": self.global_step, "loss": mean_loss, "lr": self.optimizer.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                        "samples_per_s": sps, "epoch": epoch, "skipped_videos": self.skipped,
                        "step_skipped": skip, "nonfinite_steps": self.nonfinite_steps}
                if cfg.run.log_clip_ids:
                    from accelerate.utils import gather_object

                    last["clip_ids_by_rank"] = {str(r): ids for r, ids in gather_object([(acc.process_index,
                                                                                            clip_ids)])}
                losses, clip_ids = [], []
                limit = cfg.optim.max_nonfinite_steps
                if self.global_step % cfg.run.log_every == 0 or self.global_step == cfg.run.max_steps or skip:
                    self._metrics(last)
                    acc.log({k: v for k, v in last.items() if isinstance(v, int | float)}, step=self.global_step)
                if skip:
                    log.warning("step %d: non-finite loss or gradients (loss %s, grad norm %s): no update "
                                "(%d in a row, limit optim.max_nonfinite_steps=%d)", self.global_step, mean_loss,
                                last["grad_norm"], self.nonfinite_in_a_row, limit)
                    if self.nonfinite_in_a_row >= limit:
                        raise TrainingError(
                            f"{self.nonfinite_in_a_row} optimizer steps in a row (steps "
                            f"{self.global_step - self.nonfinite_in_a_row + 1}-{self.global_step}) had a non-finite "
                            f"loss or gradients (limit optim.max_nonfinite_steps={limit}); stopping. Newest good "
                            f"checkpoint: {self.last_checkpoint or 'none'}")
                bar.update(completed=self.global_step, info=f"loss {mean_loss:.4f}  {sps:.2f} samples/s")
                v = cfg.validation.every
                if v and self.global_step % v == 0:
                    self.validate()
                    t_step = time.perf_counter()
                if (cfg.run.checkpoint_every and self.global_step % cfg.run.checkpoint_every == 0) \
                        or self.global_step == cfg.run.max_steps:
                    self.save_checkpoint()
                    t_step = time.perf_counter()
                if self.global_step >= cfg.run.max_steps:
                    break
        return last

    def _nonfinite_step(self, losses: list[torch.Tensor], grad_norm) -> bool:
        """Whether this optimizer step had a non-finite loss (any micro-step, any rank) or gradient norm (under
        DeepSpeed: whether the engine skipped it); counts it. Called on every rank at every boundary."""
        bad = not bool(torch.isfinite(torch.stack(losses)).all())
        if self.is_ds:
            bad = bad or not self.model.was_step_applied()
        elif grad_norm is not None:
            bad = bad or not math.isfinite(float(grad_norm))
        flag = torch.tensor(float(bad), device=self.accelerator.device)
        bad = bool(self.accelerator.reduce(flag, "sum").item() > 0)  # every rank skips, or none
        self.nonfinite_steps += bad
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if bad else 0
        return bad

    def _metrics(self, row: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def precompute_cache(self, epochs: int) -> None:
        """Fill the encoder cache with exactly the samples this rank draws in the first ``epochs`` epochs."""
        keys = [k for e in range(epochs) for k in self.sampler.epoch_keys(e)]
        bs = self.cfg.run.batch_size
        for i in range(0, len(keys), bs):
            self._encode(collate([self.train_set[k] for k in keys[i:i + bs]]))
        self.accelerator.print(f"encoder cache: {self.cache.misses} computed, {self.cache.hits} present")

    # -------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> None:
        acc, cfg = self.accelerator, self.cfg
        if acc.is_main_process and len(self.val_set):
            vc = cfg.validation
            folder = self.out / "samples" / f"step-{self.global_step:07d}"
            folder.mkdir(parents=True, exist_ok=True)
            row = {"step": self.global_step}
            model = acc.unwrap_model(self.model)
            ctx = nullcontext() if self.is_ds else acc.autocast()
            with ctx:
                if vc.loss_batches:
                    gen = torch.Generator().manual_seed(cfg.run.seed)
                    vals = []
                    for i in range(min(vc.loss_batches, len(self.val_set))):
                        vals.append(self.compute_loss(collate([self.val_set[i]]), gen, model).item())
                    row["val_loss"] = float(np.mean(vals))
                for i in range(min(vc.num_samples, len(self.val_set))):
                    self._sample_one(model, self.val_set[i], folder)
            self._metrics(row)
            acc.log({k: v for k, v in row.items() if k != "step"}, step=self.global_step)
        acc.wait_for_everyone()

    def _sample_one(self, model, sample: dict, folder: Path) -> None:
        from annotate.re10k import CameraTrajectory, write_camera_file
        from annotate.video import write_video

        cfg = self.cfg
        video = sample["video"][None].to(self.weight_dtype).float()  # as the model sees it (fp16 runs round)
        _, _, f, h, w = video.shape
        gen = validation_video(self.backbone, model.plugin, sample, cfg.validation, cfg.model.fs_type, cfg.run.seed,
                               self.accelerator.device, self.weight_dtype)
        both = torch.cat([gen.float().cpu(), video], dim=-1)[0]  # generated | ground truth
        frames = ((both.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
        name = sample["clip_id"]
        write_video(folder / f"{name}.mp4", frames, fps=8)
        intr_norm = intrinsics_to_normalized(sample["intrinsics"].double().numpy(), w, h)
        w2c = c2w_to_w2c(sample["c2w"].double().numpy())[:, :3, :]
        stamps = sample["frame_indices"].numpy().astype(np.int64)
        write_camera_file(folder / f"{name}_camera.txt", CameraTrajectory(f"clip://{name}", stamps, intr_norm, w2c))


@torch.no_grad()
def validation_video(backbone, plugin, sample: dict, vc: ValidationConfig, fs_type: str, seed: int,
                     device=None, dtype=None) -> torch.Tensor:
    """The generated video [1, 3, F, H, W] in ~[-1, 1] of one validation sample: its first frame, caption and
    cameras, DDIM with ``seed`` through ``DynamiCrafter.sample`` (the loop train/inference uses too), the
    plug-in's camera condition (epipolar generator seed 0) on the conditional and unconditional calls."""
    device = backbone.device if device is None else device
    video = sample["video"][None].to(device, backbone.dtype if dtype is None else dtype)
    _, _, f, h, w = video.shape
    c2w, intr = sample["c2w"][None].to(device), sample["intrinsics"][None].to(device)
    cond = plugin.condition(c2w, intr, (h, w), torch.Generator().manual_seed(0))
    fs = sample["stride"] if fs_type == "fs" else sample["fps"]
    return backbone.sample(video[:, :, 0], sample["caption"], frames=f, steps=vc.steps, spacing=vc.spacing,
                           eta=vc.eta, cfg_scale=vc.cfg_scale, guidance_rescale=vc.guidance_rescale, fs=fs, seed=seed,
                           adapter_cond=cond)


def _flat(cfg: TrainConfig) -> dict:
    from annotate.config import to_dict

    out = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)

    walk(to_dict(cfg))
    return out


def train(cfg: TrainConfig) -> dict:
    return Trainer(cfg).train()
