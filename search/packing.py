"""Each trial planned once, on the driver: its hyperparameters and its memory plan.

A `TrialPlanner` is made when the sweep starts, from the config, the model's shape and the size of
the smallest GPU in the cluster. For each trial Tune starts it gives Ray the trial's resources
(with `gpus_per_trial: auto`, the share of a GPU its predicted peak memory takes, so trials pack
onto a GPU by what they need) and gives the trial its `TrialConfig`, with the memory plan made by
trainables.memory, the same arithmetic for both. Ray never places shares adding up to more than
one GPU, so under these predictions trials that share a GPU cannot oversubscribe its memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from search.config import SweepConfig
from search.space import largest_corner, resolve_hyperparameters
from trainables.config import MemoryPlan, TrainingConfig, TrialConfig, TrialHyperparameters
from trainables.errors import ConfigError
from trainables.memory import (
    COMPILE_REPAID_AFTER_S,
    GIB,
    GpuRequest,
    SharingOption,
    compiles_layers,
    eager_training_seconds,
    local_gpu_memory_bytes,
    model_shape,
    plan_memory,
    recompute_for_shared_gpu,
    shares_in_one_gpu,
)


@dataclass(frozen=True)
class TrialPlanner:
    sweep: SweepConfig
    gpu_memory_bytes: float | None  # the smallest GPU in the cluster when the sweep started; None: none seen
    shape: dict[str, Any] | None  # the model's config.json fields; read only for GPU trials
    # The most trials one GPU holds at once by what else bounds them (the trials, the cluster's CPUs,
    # max_concurrent_trials, spread over its GPUs); None: unknown, as many as fit
    trials_per_gpu: int | None = None

    @classmethod
    def for_cluster(cls, sweep: SweepConfig, gpu_memory_bytes: float | None, cluster_cpus: float | None = None,
                    cluster_gpus: float | None = None) -> "TrialPlanner":
        on_gpu = sweep.resources.gpus_per_trial != 0 and (
            gpu_memory_bytes is not None or sweep.resources.gpus_per_trial != "auto")
        return cls(sweep, gpu_memory_bytes, model_shape(sweep.model) if on_gpu else None,
                   _trials_per_gpu(sweep, cluster_cpus, cluster_gpus))

    @classmethod
    def alone_on_this_machine(cls, sweep: SweepConfig) -> "TrialPlanner":
        """For a trial run here by itself (`best --eval-file`, a benchmark's zero-shot arm): this
        machine's whole first GPU, or its CPU. Loads torch to ask."""
        gpu_memory = local_gpu_memory_bytes()
        resources = sweep.resources.model_copy(update={"gpus_per_trial": 1 if gpu_memory else 0, "gpu_memory_gb": None})
        return cls.for_cluster(sweep.model_copy(update={"resources": resources}), gpu_memory)

    @property
    def packs_by_memory(self) -> bool:
        """gpus_per_trial auto on a cluster with GPUs: each trial's share follows its own plan."""
        return self.sweep.resources.gpus_per_trial == "auto" and self.gpu_memory_bytes is not None

    def gpu_request(self, gpu_memory_bytes: float | None = None) -> GpuRequest | None:
        """None for CPU trials. `gpu_memory_bytes`: the trial's own GPU, for a cluster that had none
        when the sweep started (an autoscaler adds GPU nodes as trials queue)."""
        resources = self.sweep.resources
        if self.shape is None:
            return None
        memory = self.gpu_memory_bytes or gpu_memory_bytes
        if memory is None:
            raise ValueError("a GPU trial needs the size of its GPU to be planned")
        budget = resources.gpu_memory_gb * GIB if resources.gpu_memory_gb is not None else None
        alike = self.shared_share if self.packs_by_memory and resources.reuse_workers else None
        return GpuRequest(gpu_memory_bytes=memory, gpus_per_trial=resources.gpus_per_trial, budget_bytes=budget,
                          least_share=alike)

    @cached_property
    def shared_share(self) -> float:
        """With gpus_per_trial auto and reuse_workers, the share every trial asks for: the largest
        trial's. Tune hands a worker only to a trial that asks for the same resources, so trials
        of unlike shares would never reuse each other's workers."""
        corner = largest_corner(self.sweep.search)
        budget = self.sweep.resources.gpu_memory_gb
        request = GpuRequest(self.gpu_memory_bytes, "auto", budget * GIB if budget is not None else None)
        return plan_memory(self.shape, self.sweep.model, self._training_for_every_trial(request),
                           self.sweep.evaluation, corner, request, self.total_steps).gpu_share

    def trial_config(self, searched: dict[str, Any], gpu_memory_bytes: float | None = None) -> TrialConfig:
        """What one trial is given: its hyperparameters and the plan for them, every `auto` decided."""
        hp = resolve_hyperparameters(self.sweep.search, searched)
        sweep = self.sweep
        gpu = self.gpu_request(gpu_memory_bytes)
        training = self._training_for_every_trial(gpu)
        plan = plan_memory(self.shape, sweep.model, training, sweep.evaluation, hp, gpu, self.total_steps)
        if self.recompute_options and self.recompute_options[0].recompute:
            plan = self._kept_within_the_share(training, hp, gpu) or plan
        return TrialConfig.planned(sweep.model, sweep.data, sweep.prompt, training, sweep.evaluation,
                                   sweep.scheduler.max_rungs, hp, plan, ranked_by=sweep.scheduler.metric)

    @property
    def total_steps(self) -> int:
        """The steps a whole trial trains: what compile_layers' auto weighs against a compile."""
        return self.sweep.scheduler.max_rungs * self.sweep.training.steps_per_rung

    def _training_for_every_trial(self, gpu: GpuRequest | None) -> TrainingConfig:
        """The training section with `compile_layers: auto` and `liger_kernels: auto` decided once for
        the whole sweep, as the largest trial's plan decides them: Liger patches the worker process for
        good (its RoPE and layer classes), so a kept worker would run every later trial with its kernels
        whatever that trial's own plan said; and compiled layers bring FlexAttention with them, which a
        kept worker's base model was loaded with."""
        training = self.sweep.training
        if self.recompute_options:
            training = training.model_copy(update={"gradient_checkpointing": self.recompute_options[0].recompute})
        if "auto" not in (training.compile_layers, training.liger_kernels):
            return training
        corner = largest_corner(self.sweep.search)
        largest = plan_memory(self.shape, self.sweep.model, training, self.sweep.evaluation, corner, gpu,
                              self.total_steps)
        return training.model_copy(update={"compile_layers": largest.compile_layers,
                                           "liger_kernels": largest.liger_kernels})

    @cached_property
    def recompute_options(self) -> list[SharingOption]:
        """With gpus_per_trial auto packing trials by their own peaks (no gpu_memory_gb) and
        gradient_checkpointing auto: recompute or not, decided once for every trial from the largest
        one (trainables.memory.recompute_for_shared_gpu), the chosen option first; trials alike in it
        ask for alike shares, which worker reuse needs. Empty where it is not decided here."""
        resources, training = self.sweep.resources, self.sweep.training
        if not self.packs_by_memory or resources.gpu_memory_gb is not None or training.gradient_checkpointing != "auto":
            return []
        request = GpuRequest(self.gpu_memory_bytes, "auto")
        return recompute_for_shared_gpu(self.shape, self.sweep.model, training, self.sweep.evaluation,
                                        largest_corner(self.sweep.search), request, self.total_steps,
                                        self.trials_per_gpu)

    def _kept_within_the_share(self, training: TrainingConfig, hp: TrialHyperparameters,
                               gpu: GpuRequest | None) -> MemoryPlan | None:
        """Where the sweep's trials recompute to share a GPU, the plan of a smaller trial that keeps its
        activations within the share the largest asks for: as many trials fit, each faster."""
        keeping = training.model_copy(update={"gradient_checkpointing": False})
        try:
            plan = plan_memory(self.shape, self.sweep.model, keeping, self.sweep.evaluation, hp, gpu, self.total_steps)
        except ConfigError:
            return None
        return plan if plan.gpu_share <= self.recompute_options[0].share else None

    def recompute_decision(self) -> str | None:
        """What gradient_checkpointing: auto decided for trials sharing a GPU, and why, in words."""
        options = self.recompute_options
        if not options:
            return None
        said = "; ".join(option.describe() for option in options)
        return (f"gradient_checkpointing: auto: {'on' if options[0].recompute else 'off'}: trials at once on one GPU, "
                f"with their predicted tokens/s in all (1: the GPU full): {said}")

    def compile_decision(self) -> str | None:
        """What compile_layers: auto decided for the sweep, and why, in words (None: set by the user, or
        CPU trials, which never compile)."""
        if self.sweep.training.compile_layers != "auto" or self.shape is None:
            return None
        corner = largest_corner(self.sweep.search)
        eager_s = eager_training_seconds(self.shape, self.sweep.training, corner, self.total_steps)
        compiled = compiles_layers(self.shape, self.sweep.training, corner, self.total_steps)
        return (f"compile_layers: auto: {'on, with FlexAttention' if compiled else 'off'}: the largest trial's "
                f"{self.total_steps} steps would take about {eager_s:.0f} s in eager layers, "
                f"{'at least' if compiled else 'under'} the {COMPILE_REPAID_AFTER_S:.0f} s that repay a compile")

    def resources(self, searched: dict[str, Any]) -> dict[str, float]:
        """What Tune asks Ray for, for one trial."""
        cpus = self.sweep.resources.cpus_per_trial
        if not self.packs_by_memory:
            gpus = self.sweep.resources.gpus_per_trial
            return {"cpu": cpus, "gpu": 0 if gpus == "auto" else gpus}  # auto with no GPU in the cluster: CPUs
        return {"cpu": cpus, "gpu": self.trial_config(searched).plan.gpu_share}

    def check_every_trial_fits(self) -> TrialHyperparameters:
        """Refuse before any trial starts if the largest corner of the search space cannot be planned:
        it would not fit one GPU, or asks for what these trials cannot have (ConfigError from the
        planner); returns that corner. Not checked while no GPU's size is known (an autoscaler's)."""
        corner = largest_corner(self.sweep.search)
        if self.shape is None or self.gpu_memory_bytes is not None:
            gpu = self.gpu_request()
            plan_memory(self.shape, self.sweep.model, self._training_for_every_trial(gpu), self.sweep.evaluation,
                        corner, gpu, self.total_steps)
        return corner


@dataclass(frozen=True)
class Concurrency:
    """How many trials run at once, and why: what run's opening lines say."""

    trials: int
    why: str  # what bounds it, in words
    hint: str | None = None  # how to use more of the cluster, when a given number leaves GPUs idle


def plan_concurrency(planner: TrialPlanner, cluster_cpus: float, cluster_gpus: float) -> Concurrency:
    """`search.max_concurrent_trials` as the cluster the sweep starts on allows it (auto), or as given."""
    sweep = planner.sweep
    wanted = sweep.search.max_concurrent_trials
    cpus_per_trial = sweep.resources.cpus_per_trial
    by_cpus = _trials_by_cpus(sweep, cluster_cpus)
    bounds = [(sweep.search.num_trials, f"{sweep.search.num_trials} trials in all"),
              (by_cpus, f"{cluster_cpus:g} CPUs at {cpus_per_trial:g} per trial")]
    share = trial_gpu_share(planner)
    by_gpus = None
    if share and cluster_gpus:
        by_gpus = _trials_by_gpus(share, cluster_gpus)
        each = "each" if planner.sweep.resources.gpus_per_trial != "auto" else "the largest trial's share"
        gpus_text = f"{cluster_gpus:g} GPU{'s' if cluster_gpus != 1 else ''}"
        bounds.append((by_gpus, f"{gpus_text} at {share:g} ({each})"))
    if wanted == "auto":
        trials, why = min(bounds, key=lambda bound: bound[0])
        return Concurrency(max(1, trials), f"auto: {why}")
    hint = None
    if by_gpus is not None and wanted < min(by_gpus, sweep.search.num_trials):
        one = cluster_gpus == 1
        hint = (f"{wanted} at a time use {wanted * share / cluster_gpus:.0%} of the GPU{'' if one else 's'}, which "
                f"hold{'s' if one else ''} {by_gpus} at {share:g} each: raise search.max_concurrent_trials (or set "
                f"it to auto) to use more of {'it' if one else 'them'}")
        if by_cpus < by_gpus:
            hint += f"; the CPUs allow {by_cpus} at {cpus_per_trial:g} per trial"
    return Concurrency(wanted, "search.max_concurrent_trials", hint)


def _trials_per_gpu(sweep: SweepConfig, cluster_cpus: float | None, cluster_gpus: float | None) -> int | None:
    """What else than memory bounds the trials one GPU holds at once: the trials, the CPUs and
    max_concurrent_trials, spread evenly over the GPUs. None where the cluster is not known."""
    if cluster_cpus is None or not cluster_gpus:
        return None
    return max(1, math.ceil(most_trials_at_once(sweep, cluster_cpus) / max(1, int(cluster_gpus + 1e-9))))


def most_trials_at_once(sweep: SweepConfig, cluster_cpus: float, cluster_gpus: float | None = None) -> int:
    """The most trials that may run at once before the GPUs' memory is known: the trials, the CPUs at
    cpus_per_trial, the GPUs at gpus_per_trial where it is a number above 0 and `cluster_gpus` is known,
    and search.max_concurrent_trials where it is a number (never less than 1)."""
    at_once = [sweep.search.num_trials, _trials_by_cpus(sweep, cluster_cpus)]
    share = sweep.resources.gpus_per_trial
    if share != "auto" and share and cluster_gpus is not None:
        at_once.append(_trials_by_gpus(share, cluster_gpus))
    if sweep.search.max_concurrent_trials != "auto":
        at_once.append(sweep.search.max_concurrent_trials)
    return max(1, min(at_once))


def _trials_by_cpus(sweep: SweepConfig, cluster_cpus: float) -> int:
    return int(cluster_cpus // sweep.resources.cpus_per_trial + 1e-9)


def _trials_by_gpus(share: float, cluster_gpus: float) -> int:
    # Ray never splits a share across GPUs: each GPU holds its own whole number of shares.
    per_gpu = shares_in_one_gpu(share) if share < 1 else 0
    return int(cluster_gpus + 1e-9) * per_gpu if per_gpu else int(cluster_gpus / share + 1e-9)


def trial_gpu_share(planner: TrialPlanner) -> float:
    """The GPUs one trial asks for; with gpus_per_trial auto, the largest trial's share (every
    trial's, when workers are reused)."""
    gpus = planner.sweep.resources.gpus_per_trial
    if gpus != "auto":
        return float(gpus)
    if not planner.packs_by_memory:
        return 0.0
    return planner.shared_share
