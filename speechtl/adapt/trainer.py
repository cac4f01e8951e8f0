"""The training loop, on accelerate: one code path for CPU, one GPU and many (DDP).

Experiment dir layout::

    config.yaml          the resolved TrainConfig      env.json      versions, git hash, argv
    train_key.json       what the run depends on (config, base model, manifests) and its hash
    train.log            everything logged             history.jsonl one line per log/eval event
    checkpoint/          latest resumable state (model, optimiser, scheduler, RNG, position)
    best/                model with the best dev WER   model/        the final model (= best)
                         (adapter methods: best/ and model/ are adapter dirs: the adapter and its card)
    summary.json         written last: a run without it is unfinished and resumes

Data order is a pure function of (seed, epoch), and the checkpoint stores the batch position,
so a killed run resumed from ``checkpoint/`` sees exactly the batches it would have seen. So are the
replay utterances each batch carries (:mod:`speechtl.adapt.replay`) and the augmentation of each
training utterance (:mod:`speechtl.features.augment`; replay, dev and test audio are never augmented).

A dir is skipped (``summary.json``) or resumed (``checkpoint/``) only when its run was made with the same
config, base model and manifests (training, dev, general dev, replay): ``train_key.json``
(:mod:`speechtl.adapt.rundir`) says which, and a run made with other inputs is refused, naming what changed,
rather than silently returned or continued; ``force`` (``speechtl train --force``) moves it aside to
``<dir>.old-<time>/`` and trains afresh. Nothing is deleted.

history.jsonl's log lines hold ``loss``, the family's task loss, and when distilling ``distill``, the
``T^2 * KL`` to the base model: the objective is ``loss + distill_weight * distill``
(:mod:`speechtl.adapt.distill`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechtl.adapt.config import ConfigError, TrainConfig, dump_config
from speechtl.adapt.distill import Objective
from speechtl.adapt.merge import wise, wise_base
from speechtl.adapt.methods import adapter_name, apply_method, data_summary, prepare_base, restore_trained, save_trained
from speechtl.adapt.replay import replay_batches
from speechtl.adapt.rundir import TrainDir, TrainKey
from speechtl.data.manifest import ManifestError, Utterance, read_manifest
from speechtl.features.audio import load_utterance
from speechtl.features.augment import AugmentConfig, Augmenter
from speechtl.features.batching import length_grouped_batches
from speechtl.io import atomic_dir, atomic_write, environment, progress, setup_logging, write_json
from speechtl.models.base import SpeechModel

LOG = logging.getLogger("speechtl.adapt")

#: Called with the model under training; returns dev WER (lower is better). Supplied by the caller,
#: so that adapt never depends on evaluate.
Evaluator = Callable[[SpeechModel], float]


def select_score(wers: dict[str, float], weight: float) -> float:
    """What the best checkpoint minimises: ``(1 - w) * target dev WER + w * general dev WER``.

    The target dev WER alone rewards drifting away from everything else; weighing in a general dev set
    picks, among the checkpoints, the trade-off between gain and forgetting the run asks for.
    """
    if weight == 0:
        return wers["dev_wer"]
    return (1 - weight) * wers["dev_wer"] + weight * wers["general_dev_wer"]


def _dev_line(wers: dict[str, float], score: float, weight: float) -> str:
    line = f"dev WER {100 * wers['dev_wer']:.2f}%"
    if "general_dev_wer" in wers:
        line += f", general dev WER {100 * wers['general_dev_wer']:.2f}%"
    return line + (f", selection score {100 * score:.2f}%" if weight else "")


def filter_durations(utts: Sequence[Utterance], cfg: TrainConfig, name: str) -> list[Utterance]:
    kept = [u for u in utts if cfg.min_duration <= u.duration <= cfg.max_duration]
    if len(kept) < len(utts):
        LOG.warning("%s: dropped %d of %d utterances outside [%.1f, %.1f] s", name, len(utts) - len(kept),
                    len(utts), cfg.min_duration, cfg.max_duration)
    if not kept:
        raise ConfigError(f"{name}: none of its {len(utts)} utterances lies within min_duration {cfg.min_duration:g} "
                          f"s and max_duration {cfg.max_duration:g} s; widen them in the config (or with --set)")
    return kept


def styled_targets(model: SpeechModel, utts: Sequence[Utterance], style: str) -> list[Utterance]:
    """The utterances with the transcripts the model trains on (``target_style``); the manifest is untouched."""
    if style == "as_is":
        return list(utts)
    out = [dataclasses.replace(u, text=model.target_text(u.text)) for u in utts]
    changed = [(u.text, v.text) for u, v in zip(utts, out, strict=True) if u.text != v.text]
    if changed:
        LOG.info("target_style model: %d of %d transcripts restyled, e.g. %s", len(changed), len(utts),
                 "; ".join(f"{a!r} -> {b!r}" for a, b in changed[:3]))
    return out


def _precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


class Batches(torch.utils.data.Dataset):
    """Loads and collates one whole batch per item, so workers do audio decoding and features.

    Item ``i`` is training utterances ``batches[i]``, through ``augmenter`` when one is given (a pure
    function of seed, ``epoch`` and utterance id), then replay utterances ``replay_batches[i]`` as
    recorded: replay stands for the speech the base model already handles, so it is not augmented.
    """

    def __init__(self, model: SpeechModel, utts: Sequence[Utterance], batches: list[list[int]],
                 augmenter: Augmenter | None = None, epoch: int = 0, replay: Sequence[Utterance] = (),
                 replay_batches: list[list[int]] | None = None):
        self.model, self.utts, self.batches, self.augmenter, self.epoch = model, utts, batches, augmenter, epoch
        self.replay, self.replay_batches = replay, replay_batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        utts = [self.utts[j] for j in self.batches[i]]
        audios = [load_utterance(u, self.model.sampling_rate) for u in utts]
        if self.augmenter is not None:
            audios = [self.augmenter(a, u.id, self.epoch) for a, u in zip(audios, utts, strict=True)]
        if self.replay_batches is not None:
            replayed = [self.replay[j] for j in self.replay_batches[i]]
            utts += replayed
            audios += [load_utterance(u, self.model.sampling_rate) for u in replayed]
        try:
            return self.model.collate(audios, [u.text for u in utts], [u.lang for u in utts])
        except ManifestError as e:  # the model knows what it can't take, the batch which utterances it holds
            bad = [u for u, a in zip(utts, audios, strict=True) if not _collates(self.model, a, u.text)]
            named = ", ".join(f"{u.id} ({u.source})" if u.source else u.id for u in bad)
            raise ManifestError(f"{named or 'an utterance of this batch'}: {e}; shorten its transcript or drop it "
                                "from the manifest") from e


def _collates(model: SpeechModel, audio: np.ndarray, text: str) -> bool:
    try:
        model.collate([audio], [text])  # the language doesn't change whether a transcript fits
    except ManifestError:
        return False
    return True


def train(model: SpeechModel, train_utts: Sequence[Utterance], out_dir: str | Path, cfg: TrainConfig,
          evaluator: Evaluator | None = None, general_evaluator: Evaluator | None = None, *,
          train_manifest: str | os.PathLike | None = None, dev_manifest: str | os.PathLike | None = None,
          force: bool = False) -> dict[str, Any]:
    """Adapt ``model`` on ``train_utts``; resumable; returns the summary written to ``summary.json``.

    ``evaluator`` gives the target dev WER, ``general_evaluator`` that of ``cfg.dev_general``; both are
    called at each evaluation, and the best checkpoint is chosen on :func:`select_score`.
    ``train_manifest`` (the file ``train_utts`` were read from) and ``dev_manifest`` (the set ``evaluator``
    decodes) go into the run's key; without ``train_manifest`` the utterances themselves do. A dir
    holding a run made with other inputs raises :class:`~speechtl.adapt.rundir.TrainDirError`, unless
    ``force`` moves it aside (to ``<out_dir>.old-<time>/``) to train afresh.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    out = Path(out_dir)
    run, key = TrainDir(out), TrainKey.of(model, cfg, train_utts, train_manifest, dev_manifest)
    if not force and run.check(key):
        LOG.info("%s: training already finished with the same config, base model and manifests (train key %s); "
                 "nothing to do", out, key.key)
        return json.loads((out / "summary.json").read_text())
    if general_evaluator is not None and evaluator is None:
        raise ConfigError("dev_general: a general dev set is weighed against a target dev set; give that too (--dev)")
    if cfg.select_weight > 0 and general_evaluator is None:
        raise ConfigError(f"select_weight {cfg.select_weight:g} weighs in the general dev WER, but no evaluator for "
                          "dev_general was given")
    # Several processes without GPUs (torchrun on CPUs): accelerate needs to be told, then uses gloo.
    cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=_precision(cfg), gradient_accumulation_steps=cfg.grad_accum, cpu=cpu_ddp)
    main = accelerator.is_main_process
    if main:
        aside = run.move_aside() if force else None
        out.mkdir(parents=True, exist_ok=True)
        setup_logging(out / "train.log")
        if aside is not None:
            LOG.info("--force: the run that was in %s is now in %s; training afresh", out, aside)
        with atomic_write(out / "config.yaml") as f:
            f.write(dump_config(cfg))
        run.write_key(key)
        write_json(out / "env.json", {**environment(), "accelerate": {
            "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
            "device": str(accelerator.device)}, "base_model": model.source})
    accelerator.wait_for_everyone()  # with force, no process may look for a checkpoint before the old run is aside
    set_seed(cfg.seed)
    prepare_base(model, cfg)
    utts = styled_targets(model, filter_durations(train_utts, cfg, "train"), cfg.target_style)
    replay = styled_targets(model, filter_durations(read_manifest(cfg.replay_manifest), cfg, "replay"),
                            cfg.target_style) if cfg.replay_fraction > 0 else []
    data = data_summary(utts)
    card = {"name": adapter_name(data["accents"]), "accent": next(iter(data["accents"]), None), "training_data": data,
            # settings the adapted model must be run with (audio context): applied when the adapter is loaded
            "model_settings": dict(cfg.model_settings)}
    vocabulary = model.fit_vocabulary([u.text for u in [*utts, *replay]])
    try:
        model.configure(**cfg.model_settings)
    except ValueError as e:
        raise ConfigError(f"model_settings: {e}") from e
    counts = apply_method(model, cfg, vocabulary)
    base_weights = wise_base(model, cfg.method) if cfg.wise_alpha < 1.0 else None
    objective = Objective.build(model, cfg, vocabulary, accelerator.device)
    augment = AugmentConfig.from_dict(cfg.augment, "config")
    augmenter = Augmenter(augment, cfg.seed, model.sampling_rate, model.max_input_seconds) if augment.enabled else None
    controls = {"distill_weight": cfg.distill_weight, "distill_temperature": cfg.distill_temperature,
                "distill_teacher_bytes": objective.teacher_bytes, "replay_manifest": cfg.replay_manifest or None,
                "replay_utterances": len(replay), "replay_per_batch": cfg.replay_per_batch,
                "augment": augment.to_dict()}
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    params = [p for p in model.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=cfg.adam_betas)
    scheduler = get_scheduler(cfg.lr_scheduler if cfg.lr_scheduler != "constant" else "constant_with_warmup",
                              optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps)
    module, optimizer, scheduler = accelerator.prepare(model.module, optimizer, scheduler)
    state = {"step": 0, "epoch": 0, "batch": 0, "best_wer": math.inf, "best_general_wer": None,
             "best_score": math.inf, "best_step": None}
    ckpt = out / "checkpoint"
    if (ckpt / "trainer_state.json").is_file():
        accelerator.load_state(str(ckpt))
        saved = json.loads((ckpt / "trainer_state.json").read_text())
        state = {**state, "best_score": saved["best_wer"], **saved}  # a checkpoint from before select_weight
        LOG.info("resuming from %s at step %d (epoch %d, batch %d)", ckpt, state["step"], state["epoch"],
                 state["batch"])
    world, rank = accelerator.num_processes, accelerator.process_index
    durations = [u.duration for u in utts]
    per_update = cfg.batch_size * world
    LOG.info("training on %d utterances (%.2f h), %d step(s), %d utterance(s) per micro-batch x %d process(es) x "
             "%d accumulation", len(utts), sum(durations) / 3600, cfg.max_steps, cfg.batch_size, world, cfg.grad_accum)
    if replay:
        LOG.info("replay: %d of each micro-batch's %d utterances from %s (%d utterances)", cfg.replay_per_batch,
                 cfg.batch_size, cfg.replay_manifest, len(replay))
    if augmenter is not None:
        LOG.info("augmenting training audio: %s", augment.to_dict())

    def evaluate_dev() -> dict[str, float] | None:
        """``dev_wer`` and (with dev_general) ``general_dev_wer``."""
        if evaluator is None or not main:  # one process decodes; the others wait at the checkpoint barrier
            return None
        module.eval()
        wers = {"dev_wer": evaluator(model)}
        if general_evaluator is not None:
            wers["general_dev_wer"] = general_evaluator(model)
        module.train()
        return wers

    def save_checkpoint() -> None:
        accelerator.wait_for_everyone()
        if main:
            with atomic_dir(ckpt) as tmp:
                accelerator.save_state(str(tmp))
                write_json(tmp / "trainer_state.json", state)

    def log_event(event: dict[str, Any]) -> None:
        if main:
            with open(out / "history.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")

    t0 = time.perf_counter()
    module.train()
    bar = progress(total=cfg.max_steps, initial=state["step"], desc="train", unit="step", disable=not main)
    running, running_kd, seen = 0.0, 0.0, 0
    while state["step"] < cfg.max_steps:
        mine = rank_batches(durations, cfg.batch_size - cfg.replay_per_batch, world, rank, cfg.seed + state["epoch"])
        extra = replay_batches(len(replay), cfg.replay_per_batch, world, rank, cfg.seed, state["epoch"], len(mine))
        start = state["batch"]
        loader = torch.utils.data.DataLoader(
            Batches(model, utts, mine[start:], augmenter, state["epoch"], replay, extra[start:]), batch_size=None,
            num_workers=cfg.num_workers)
        for batch in loader:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(module):
                with accelerator.autocast():
                    terms = objective(batch, module)
                accelerator.backward(terms.total(cfg.distill_weight, _shares(accelerator, terms.counts())))
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batch"] += 1
            running += terms.loss.item()
            running_kd += terms.distill.item() if terms.distill is not None else 0.0
            seen += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            step = state["step"]
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                avg, kd = accelerator.gather(torch.tensor([[running / seen, running_kd / seen]],
                                                          device=accelerator.device)).mean(0).tolist()
                lr = scheduler.get_last_lr()[0]
                distilled = {"distill": kd} if objective.distills else {}
                LOG.info("step %d/%d epoch %d loss %.4f%s lr %.2e", step, cfg.max_steps, state["epoch"], avg,
                         f" distill {kd:.4f}" if distilled else "", lr)
                log_event({"step": step, "epoch": state["epoch"], "loss": avg, **distilled, "lr": lr,
                           "elapsed": round(time.perf_counter() - t0, 1)})
                bar.set_postfix(loss=f"{avg:.3f}")
                running, running_kd, seen = 0.0, 0.0, 0
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps:
                wers = evaluate_dev()
                if wers is not None:
                    score = select_score(wers, cfg.select_weight)
                    # A tie goes to the later, longer-trained model (a model learning from scratch sits
                    # at 100% WER for a while; the first of those is not the one to keep).
                    improved = score <= state["best_score"]
                    LOG.info("step %d: %s%s", step, _dev_line(wers, score, cfg.select_weight),
                             " (best so far)" if improved else "")
                    log_event({"step": step, **wers, "select_score": score})
                    if improved:
                        state.update(best_score=score, best_wer=wers["dev_wer"], best_step=step,
                                     best_general_wer=wers.get("general_dev_wer"))
                        if main:
                            with atomic_dir(out / "best") as tmp:
                                save_trained(model, cfg, tmp, card)
                save_checkpoint()
            elif step % cfg.save_every == 0:
                save_checkpoint()
            if step >= cfg.max_steps:
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    accelerator.wait_for_everyone()
    summary = {"steps": state["step"], "epochs_started": state["epoch"] + 1, "best_dev_wer": None,
               "best_general_dev_wer": None, "best_select_score": None, "select_weight": cfg.select_weight,
               "dev_general": cfg.dev_general or None, "best_step": state["best_step"], "train_utterances": len(utts),
               "train_hours": data["hours"], "train_speakers": data["speakers"], "train_accents": data["accents"],
               "utterances_per_step": per_update * cfg.grad_accum, "seconds": round(time.perf_counter() - t0, 1),
               "method": cfg.method, **cfg.method_block(), "vocabulary": vocabulary, **counts,
               "base_model": model.source, "peak_memory_bytes": _peak_memory(accelerator.device), **controls}
    if main:
        if state["best_step"] is not None:
            summary.update(best_dev_wer=state["best_wer"], best_general_dev_wer=state["best_general_wer"],
                           best_select_score=state["best_score"])
            model = restore_trained(model, cfg, out / "best")
        if base_weights is not None:
            wise(model, cfg.method, base_weights, cfg.wise_alpha)
            summary["wise_alpha"] = cfg.wise_alpha
            final = evaluate_dev()
            if final is not None:
                summary["final_dev_wer"] = final["dev_wer"]
                if "general_dev_wer" in final:
                    summary["final_general_dev_wer"] = final["general_dev_wer"]
                LOG.info("WiSE-FT alpha %.2f: %s (adapted alone: dev WER %.2f%%)", cfg.wise_alpha,
                         _dev_line(final, select_score(final, cfg.select_weight), cfg.select_weight),
                         100 * state["best_wer"])
        with atomic_dir(out / "model") as tmp:
            save_trained(model, cfg, tmp, card)
        write_json(out / "summary.json", summary)
        LOG.info("finished: %d steps in %.0fs; model in %s", state["step"], summary["seconds"], out / "model")
    return summary


def rank_batches(durations: Sequence[float], batch_size: int, world: int, rank: int, seed: int) -> list[list[int]]:
    """This process's part of each global batch of ``batch_size * world`` utterances.

    Global batches are cut first and then shared out, so N processes see together exactly the
    batches one process would with the same global batch; a global batch too small to give every
    process an utterance (the last, at most) is left out by all.
    """
    batches = length_grouped_batches(durations, batch_size * world, seed)
    return [[int(i) for i in np.array_split(b, world)[rank]] for b in batches if len(b) >= world]


def _shares(accelerator, counts: list[int]) -> list[float]:
    """Weight of each of this process's means, so that DDP's average of gradients is the global batch's mean.

    Each process's loss is a mean over its own items (tokens, utterances; the distillation term's positions);
    processes rarely hold equally many, and an average of means is not the mean. Scaling each by
    ``items_here * world / items_all`` makes the gradient the one a single process would get from the whole
    global batch. One all-reduce serves every term.
    """
    if accelerator.num_processes == 1:
        return [1.0] * len(counts)
    here = torch.tensor([float(c) for c in counts], device=accelerator.device)
    total = accelerator.reduce(here.clone(), reduction="sum")
    return (here * accelerator.num_processes / total).tolist()


def _peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
    except (ImportError, OSError):
        return None
