"""Multi-member training: S independent trainings of one model, at once, on every device.

Each member (seed id s of a root seed) has its own init key, its own data order and, when the
caller asks for random labels, its own label draw, all derived with ``fold_in`` (`rl_align.seeds`);
so seed s trained alone gives the same result as seed s trained inside a batch of seeds.  Members
are sharded over all devices (on CPU the binaries expose one XLA device per core,
`experiments/host_devices.py`; importing rl_align sets nothing process-wide) and run in a layout
chosen per backend and model from measurements (`rl_align.engine.layout`).  The compiled programs
live in `rl_align.engine.programs`; this module drives them.

Usage::

    from rl_align import models, seeds, train
    from rl_align.engine import config as engine_config
    cfg = engine_config.default_config()
    cfg.num_seeds, cfg.num_epochs, cfg.batch_size = 8, 5, 128
    model = models.DenseNet(widths=(2048, 256))
    labels = seeds.random_labels(cfg.seed, seeds.seed_ids(cfg), n=len(x), num_classes=10)  # [S, N]
    res = train.train(model, cfg, x, labels, workdir="/tmp/run")   # resumes if /tmp/run has a checkpoint
    res.params            # stacked numpy params, leading axis = member
    res.snapshots[step]   # {"first_kernel": [S, ...]} at cfg.snapshot_steps / snapshot_epochs
    res.metrics           # rows {"phase", "step", "epoch", "seed", "loss", "batch_accuracy", ...}

Every logged step reports one row per member to the call's metric writer (`writer=`, a
`rl_align.metric_writers.MetricWriter`; by default workdir/metrics.jsonl) and logs steps/s and
ETA.  A member whose loss or gradient turns non-finite is frozen at its last finite parameters and
flagged in ``res.diverged`` / ``res.diverged_step``; the others finish.  A SIGINT / SIGTERM (with
the handlers of `rl_align.interrupts` installed, as the binaries do) stops the loop at its next
event step after a checkpoint: `errors.Interrupted` carries the step, and a rerun resumes there.
"""

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Generator, Mapping, Sequence

from absl import logging
import flax.linen as nn
import jax
import numpy as np

from rl_align import errors
from rl_align import flops as flops_lib
from rl_align import interrupts
from rl_align import metric_writers
from rl_align import progress as progress_lib
from rl_align import seeds
from rl_align.engine import checkpoint
from rl_align.engine import config as config_lib
from rl_align.engine import programs
from rl_align.engine import feed as feed_lib
from rl_align.engine import grouping
from rl_align.engine import records


# The largest share of a run's time its checkpoints may take: a save that took s seconds waits at
# least s / CHECKPOINT_SHARE before the next (config.checkpoint_every_secs is the least gap).
CHECKPOINT_SHARE = 0.05


@dataclasses.dataclass
class TrainResult:
  """What `train` returns; arrays are numpy with a leading member axis, one row per seed id."""

  params: Any
  seed_ids: list[int]
  final_step: int
  steps_per_epoch: int
  diverged: np.ndarray  # [S] bool
  diverged_step: np.ndarray  # [S] int, -1 if never
  metrics: list[dict]
  snapshots: dict[int, dict[str, np.ndarray]]
  final_metrics: dict[str, np.ndarray]  # eval metrics at the final step, [S] each
  layout: str = ""  # the engine's layout, e.g. "map" or "map_fused" (`Layout.name`)


@dataclasses.dataclass
class TrainCall:
  """The arguments of one `train` call (a sweep point's phase); `run_calls` packs several."""

  model: nn.Module
  cfg: Any
  x: Any  # [N, ...] float32 (None when fed from the host: `feed`)
  labels: np.ndarray  # [S, N]
  members: seeds.Members
  feed: feed_lib.Feed | None = None  # the host feed the batches stream from (None: x, labels)
  workdir: str | None = None
  eval_sets: Mapping[str, tuple[Any, Any]] | None = None
  init_params: Any = None
  snapshot_fn: Callable[[Any], Mapping[str, np.ndarray]] = records.first_layer_snapshot
  probe_fn: Callable[[nn.Module, Any], Mapping[str, Any]] | None = None
  name: str = "train"
  # Where its metrics rows go (None: workdir/metrics.jsonl, or nowhere without a workdir).
  writer: metric_writers.MetricWriter | None = None
  # The ledger its training FLOPs are recorded in (`rl_align.flops`; None: not counted).
  ledger: flops_lib.Ledger | None = None
  # Set by `mark_parts` when calls yielded together share its workdir and phase: "part<j>" keeps
  # its checkpoints and snapshots apart ("": the call has its phase's folders to itself).
  part: str = ""


def call(
  model: nn.Module,
  cfg,
  x,
  labels,
  *,
  workdir: str | None = None,
  eval_sets: Mapping[str, tuple[Any, Any]] | None = None,
  init_params=None,
  snapshot_fn: Callable[[Any], Mapping[str, np.ndarray]] = records.first_layer_snapshot,
  probe_fn: Callable[[nn.Module, Any], Mapping[str, Any]] | None = None,
  name: str = "train",
  writer: metric_writers.MetricWriter | None = None,
) -> TrainCall:
  """The checked TrainCall of `train`'s arguments, not run: a runner yields it (`driven`).  The
  engine's one decision on where the batches come from is made here: from the arrays (x,
  labels), or from a host feed passed as x (`engine.feed.Feed`, labels None)."""
  feed = x if isinstance(x, feed_lib.Feed) else None
  config_lib.validate(cfg, model, x, labels, feed=feed)
  s = int(cfg.num_seeds)
  if feed is not None:
    x, labels = None, np.zeros((s, 0), np.int32)
  else:
    x = np.asarray(x, np.float32)
    labels = np.broadcast_to(np.asarray(labels, np.int32), (s, x.shape[0]))
  return TrainCall(
    model=model,
    cfg=cfg,
    x=x,
    members=seeds.Members.of(cfg),
    labels=labels,
    feed=feed,
    workdir=workdir,
    eval_sets=eval_sets,
    init_params=init_params,
    snapshot_fn=snapshot_fn,
    probe_fn=probe_fn,
    name=name,
    writer=writer,
  )


def train(model: nn.Module, cfg, x, labels, **kwargs) -> TrainResult:
  """Trains cfg.num_seeds members of `model` on (x, labels) with SGD-family optimizers.

  Args:
    model: a flax.linen Module mapping a batch of x to logits.
    cfg: `engine.config.default_config()` (or an experiment config's engine part).
    x: [N, ...] float inputs, shared by all members; or a host feed (`rl_align.pipeline.HostFeed`)
      with labels None.
    labels: [N] shared labels, or [S, N] per-member labels (e.g. `seeds.random_labels`).
    **kwargs: keyword arguments of `call`:
      workdir: if given, metrics/snapshots/checkpoints go there and a rerun resumes.
      eval_sets: name -> (x_eval [E, ...], y_eval [E] or [S, E]); accuracy and loss logged as
        `<name>_accuracy`, `<name>_loss` at eval steps.  A "train" set (the first
        cfg.train_eval_examples examples with the members' labels) is added unless given.
      init_params: stacked params [S, ...] to start from instead of the model's init.
      snapshot_fn: stacked host params -> dict of arrays, stored at snapshot steps.
      probe_fn: (model, params of ONE member) -> dict of scalars, jit-compatible; evaluated at
        eval steps and logged as `probe/<key>` (e.g. ReLU activity on a fixed probe batch, see
        rl_align.activity).  It receives the model the engine runs (possibly an im2col clone).
      name: the phase name (separates checkpoints and metrics of several phases in one workdir).
      writer: where the metrics rows go (`rl_align.metric_writers`; default: workdir/metrics.jsonl).
  """
  return run_calls([call(model, cfg, x, labels, **kwargs)])[0]


# ----------------------------------------------------------------------------------------------
# Runners as generators: a runner yields its TrainCalls, one at a time or several independent ones
# in a list, and receives their TrainResults (`res = yield train.call(...)`, `a, b = yield [ca,
# cb]`, helpers via `yield from`).  The calls of a list, and in a sweep the calls of several
# runners advanced in lockstep (`rl_align.packing.run_lockstep`), run as one program wherever they
# are compatible (`engine.grouping`).  `drive` runs one runner alone, as `train` does.


def mark_parts(calls: Sequence[TrainCall]) -> None:
  """Gives each call that shares its workdir and phase with another of `calls` (yielded together)
  its part "part<j>", j its rank among them, so that their checkpoints and snapshots stay apart."""
  seen: dict = {}
  for c in calls:
    key = (c.workdir, c.name)
    seen[key] = seen.get(key, 0) + 1
  rank: dict = {}
  for c in calls:
    key = (c.workdir, c.name)
    if seen[key] > 1:
      c.part = f"part{rank.get(key, 0)}"
      rank[key] = rank.get(key, 0) + 1


def run_packed(
  calls: Sequence[TrainCall], packed_dir: str | None = None, packing: bool = True
) -> list:
  """Runs `calls`, each group of compatible ones as one program (`engine.grouping.group`; with
  packing False, each call as its own program); per call, its TrainResult or the exception its
  program raised (an interrupt propagates)."""
  mark_parts(calls)
  out: list = [None] * len(calls)
  groups = grouping.group(calls) if packing else [[k] for k in range(len(calls))]
  for idx in groups:
    try:
      got = run_calls([calls[k] for k in idx], packed_dir)
    except Exception as e:  # pylint: disable=broad-except  # raised where the runner made the call
      got = [e] * len(idx)
    for k, r in zip(idx, got):
      out[k] = r
  return out


def reply(pending, results: Sequence) -> tuple[Any, bool]:
  """(what to send back to a runner that yielded `pending`, whether it is an exception to throw):
  its result (a list for a list), or the first exception among its calls'."""
  failed = [r for r in results if isinstance(r, BaseException)]
  if failed:
    return failed[0], True
  return (list(results) if isinstance(pending, list) else results[0]), False


def drive(calls: Generator[TrainCall, TrainResult, Any], packing: bool = True) -> Any:
  """Runs a runner's generator alone: each TrainCall it yields (or list of them, packed where
  compatible; with packing False each as its own program, as before lists) runs and its
  TrainResult is sent back (a failed or interrupted call raises inside the runner); returns the
  runner's value.  The generator is closed here whatever happens, never at interpreter exit."""
  step, value = calls.send, None
  try:
    while True:
      try:
        pending = step(value)
      except StopIteration as stop:
        return stop.value
      try:
        batch = pending if isinstance(pending, list) else [pending]
        value, thrown = reply(pending, run_packed(batch, packing=packing))
      except errors.Interrupted as e:
        value, thrown = e, True
      step = calls.throw if thrown else calls.send
  finally:
    calls.close()


def driven(steps_fn: Callable[..., Generator]) -> Callable[..., Any]:
  """Decorator of a runner written as a generator function: the decorated name runs it alone
  (`drive`), and its attribute `steps` is the generator function, for `yield from fn.steps(...)`
  in another runner and for sweeps."""

  @functools.wraps(steps_fn)
  def alone(*args, **kwargs):
    return drive(steps_fn(*args, **kwargs))

  alone.steps = steps_fn
  return alone


def recorded(
  calls: Generator[TrainCall, TrainResult, Any],
  ledger: flops_lib.Ledger | None,
  writer_for: Callable[[str | None], metric_writers.MetricWriter] | None = None,
):
  """The generator `calls`, each of whose TrainCalls passing through is given `ledger` (its
  training FLOPs are recorded there) and, when it has none, the writer `writer_for(workdir)`:
  where a run records itself hands these to the engine explicitly, also when a sweep interleaves
  its runner with others'."""
  step, value = calls.send, None
  while True:
    try:
      pending = step(value)
    except StopIteration as stop:
      return stop.value
    for c in pending if isinstance(pending, list) else [pending]:
      c.ledger = ledger
      if c.writer is None and writer_for is not None:
        c.writer = writer_for(c.workdir)
    try:
      value, step = (yield pending), calls.send
    except (Exception, errors.Interrupted) as e:  # pylint: disable=broad-except
      value, step = e, calls.throw  # raised where the runner made the call


def run_calls(calls: Sequence[TrainCall], packed_dir: str | None = None) -> list[TrainResult]:
  """Runs one engine program over the members of every call (they share the model's program,
  the engine config up to `seeds.MEMBER_HPARAMS` and the root seed, x and the eval inputs:
  `engine.grouping.compatible`).  Returns one TrainResult per call, each equal to the call run
  alone.  Several calls keep their orbax state in a folder of their workdir (all in one) or of
  `packed_dir`; host-fed calls run alone (each feed has its own data order).  A call marked as a
  part of its phase (`mark_parts`) keeps its state and snapshots in folders of its part."""
  if len(calls) > 1 and any(c.feed is not None for c in calls):
    raise ValueError(
      "run_calls: host-fed calls cannot be packed (each feed streams its own data "
      "order). Fix: run each host-fed call alone."
    )
  run = _Run(calls, packed_dir)
  run.restore()
  run.log_start()
  run.train()
  return run.results()


def _writer(c: TrainCall) -> metric_writers.MetricWriter:
  """The call's writer, or its workdir's metrics.jsonl (written by process 0), or none."""
  if c.writer is not None:
    return c.writer
  if c.workdir is None:
    return metric_writers.NoopWriter()
  return metric_writers.JsonlWriter(
    os.path.join(c.workdir, "metrics.jsonl"), writes=jax.process_index() == 0
  )


def _call_records(calls: Sequence[TrainCall]) -> list[records.CallRecords]:
  """Each call's records, over its slice of the concatenated member axis (a call that is a part of
  its phase keeps its snapshots in its part's folder)."""
  out, offset = [], 0
  for c in calls:
    sl = slice(offset, offset + len(c.members))
    out.append(
      records.CallRecords(c.name, c.workdir, c.members.ids, sl, c.snapshot_fn, _writer(c), c.part)
    )
    offset = sl.stop
  return out


def _initial_state(
  eng: programs.Engine, calls: Sequence[TrainCall], members: seeds.Members
) -> programs.TrainState:
  """Step-0 state of every member: given init params, or each call's model's own init (models
  of a pack may differ in init-only fields such as init scales)."""
  if all(c.init_params is not None for c in calls):
    params = jax.tree.map(lambda *a: np.concatenate(a), *[c.init_params for c in calls])
    return eng.initial_state(
      members, jax.tree.map(lambda a: programs.pad_members(a, eng.m_pad), params)
    )
  state = eng.initial_state(members)
  first = calls[0].model
  if all(c.model is first or c.model == first for c in calls):
    return state
  host = programs.to_host(
    state.params
  )  # another init per distinct model, member m takes its call's
  for c, rec in zip(calls, _call_records(calls)):
    if not c.model == first:
      other = programs.Engine(c.model, c.cfg, eng.x_shape, eng.m_pad, with_decay=eng.with_decay)
      theirs = programs.to_host(other.init_params(members)[0])
      sl = rec.sl
      host = jax.tree.map(
        lambda a, b: np.concatenate([a[: sl.start], b[sl], a[sl.stop :]]), host, theirs
      )
  return eng.initial_state(members, host)


class _Run:
  """One engine program over the members of `calls`: built, restored, trained, read out."""

  def __init__(self, calls: Sequence[TrainCall], packed_dir: str | None):
    c0 = self.c0 = calls[0]
    self.calls, self.cfg, self.name = calls, c0.cfg, c0.name
    self.feed = c0.feed
    members = seeds.Members.concat([c.members for c in calls])
    self.n_members = len(members)  # the engine pads the member axis to eng.m_pad
    x_shape = (
      (self.feed.n,) + tuple(self.feed.example_shape) if self.feed is not None else c0.x.shape
    )
    self.eng = programs.cached_engine(
      c0.model,
      self.cfg,
      x_shape,
      self.n_members,
      c0.probe_fn,
      with_decay=any(wd != 0 for wd in members.weight_decay),
    )
    self.members = members.padded(self.eng.m_pad)
    self.records = _call_records(calls)
    self.snap_steps, self.log_steps, self.eval_steps = records.event_steps(
      self.cfg, self.eng.total, self.eng.steps_per_epoch
    )
    self.events = sorted(self.snap_steps | self.log_steps | self.eval_steps)
    self.eval_data = self._eval_data()
    if self.feed is None:
      self.inputs = self.eng.put_inputs(
        self.members, c0.x, np.concatenate([c.labels for c in calls])
      )
    else:
      self.hparams = self.eng.put_members(self.members.hparams())
    self.state = _initial_state(self.eng, calls, self.members)
    self.is_main = jax.process_index() == 0
    names = [f"{c.name}_{c.part}" if c.part else c.name for c in calls]
    root = checkpoint.state_dir([c.workdir for c in calls], names, packed_dir)
    self.ckpt = checkpoint.Checkpointer(root) if root else None
    self.step, self.final_metrics = 0, {}
    self.phases = progress_lib.Phases()

  def _eval_data(self) -> dict:
    """name -> (xs, ys, mask) on the devices: the eval sets, and the "train" set unless given."""
    eng, cfg, feed = self.eng, self.cfg, self.feed
    sets = dict(self.c0.eval_sets or {})
    k = min(eng.n, cfg.train_eval_examples)
    head = feed.head(k) if feed is not None and "train" not in sets and k else None
    if "train" not in sets and k:
      sets["train"] = (head[0] if head is not None else self.c0.x[:k], None)
    out = {}
    for key, (xe, _) in sets.items():
      ys = []
      for c in self.calls:
        default = (None, head[1] if head is not None else c.labels[:, :k])
        ye = (c.eval_sets or {}).get(key, default)[1]
        ys.append(np.broadcast_to(np.asarray(ye), (len(c.members), np.shape(xe)[0])))
      xs, ys, mask = records.eval_batches(
        np.asarray(xe, np.float32), np.concatenate(ys), self.n_members, cfg.eval_batch_size
      )
      out[key] = (
        eng.put_replicated(xs),
        eng.put_members(programs.pad_members(ys, eng.m_pad)),
        eng.put_replicated(mask),
      )
    return out

  def restore(self) -> None:
    """Continues from the latest checkpoint, if any (each call's records cut to its step)."""
    if self.ckpt is None:
      return
    restored = self.ckpt.restore(programs.to_host(self.state))
    if restored is None:
      return
    self.step, host_state = restored
    self.state = programs.TrainState(*self.eng.put_members(tuple(host_state)))
    for rec in self.records:
      rec.resume(self.step)
    logging.info("%s: resumed from step %d in %s", self.name, self.step, self.ckpt.root)

  def log_start(self) -> None:
    eng, n, calls = self.eng, self.n_members, self.calls
    what = f"{n} members of {len(calls)} packed calls" if len(calls) > 1 else f"{n} seeds"
    logging.info(
      "%s: %s x %d steps (%d/epoch) on %d %s device(s) in %d process(es), layout=%s, "
      "gradient micro-batch %d of %d",
      self.name,
      what,
      eng.total,
      eng.steps_per_epoch,
      eng.mesh.size,
      eng.devices[0].platform,
      jax.process_count(),
      eng.layout.name,
      eng.microbatch,
      self.cfg.batch_size,
    )

  def train(self) -> None:
    """Runs the remaining steps piece by piece (`feed.segments`), acting at every event step.
    Times each phase (`self.phases`): training steps (waited for at each event), evaluation,
    snapshots, checkpoints and XLA compilation."""
    if 0 in self.snap_steps and any(0 not in r.snapshots for r in self.records):
      with self.phases("snapshot"):
        self._snapshot(0)
    self.prog = progress_lib.Progress(self.eng.total, self.step, self.name)
    start = self.step
    self.last_ckpt, self.ckpt_gap = time.monotonic(), float(self.cfg.checkpoint_every_secs)
    self.sums, self.interval_start = None, self.step
    precision = self.cfg.matmul_precision  # "default": JAX_DEFAULT_MATMUL_PRECISION, if set
    if precision == "default":
      precision = jax.config.jax_default_matmul_precision
    with jax.default_matmul_precision(precision), interrupts.deferred():
      for t0, t1, buf, ends in feed_lib.segments(
        self.feed, self.eng.member_sharding, self.members.ids, self.events, self.step
      ):
        with self.phases("train"):
          means = self._advance(t0, t1, buf, ends)
          if ends:
            jax.block_until_ready((self.state, means))
        self.step = t1
        if ends:
          self._event(t1, means)
          self._stop_if_asked(t1, start)
    if not self.final_metrics and self.ckpt is not None:  # finished run reloaded: final eval
      with self.phases("eval"):
        self.final_metrics = self._evaluate()
    self._count_flops(self.step - start)

  def _stop_if_asked(self, step: int, start: int) -> None:
    """After an event step: on a signal (any process's, `interrupts.agreed`), checkpoint (unless
    this step's was just written), record the FLOPs so far and raise `errors.Interrupted`."""
    if not interrupts.agreed():
      return
    if self.ckpt is not None and self.ckpt.latest_step() != step:
      with self.phases("checkpoint"):
        self.ckpt.save(step, programs.to_host(self.state))
    self._count_flops(step - start)
    logging.warning(
      "%s: stopping at step %d on signal %s; rerun the same command to resume.",
      self.name,
      step,
      interrupts.signal_number(),
    )
    raise errors.Interrupted(interrupts.signal_number() or 2, step, self.name)

  def _count_flops(self, steps: int) -> None:
    """Records each call's training FLOPs (steps run here x its members x one member-step's
    nominal FLOPs, `Engine.step_flops`) and its phase times in the call's ledger
    (`rl_align.flops`)."""
    if not any(c.ledger is not None for c in self.calls):  # nobody counts: skip the trace
      return
    for c in self.calls:  # a packed call's share of the program's time: its share of members
      if c.ledger is None:
        continue
      share = len(c.members) / self.n_members
      c.ledger.record(
        c.name,
        self.eng.step_flops,
        steps,
        len(c.members),
        seconds={k: v * share for k, v in self.phases.seconds.items()},
      )

  def _advance(self, t0: int, t1: int, buf, ends: bool):
    """Steps t0..t1; at an interval's end, its (mean loss [M], mean batch accuracy [M])."""
    eng = self.eng
    if buf is None:
      self.state, lmean, amean = eng.chunk(self.state, self.inputs, np.int32(t0), np.int32(t1))
      return lmean, amean
    self.sums = self.sums or (eng.put_members(np.zeros(eng.m_pad, np.float32)),) * 2
    self.state, *sums = eng.chunk_fed(
      self.state,
      self.hparams,
      tuple(self.sums),
      buf.x,
      buf.y,
      np.int32(buf.t0),
      np.int32(t0 - buf.t0),
      np.int32(t1 - buf.t0),
    )
    self.sums = sums
    if not ends:
      return None
    # The interval's means, divided as the device-resident chunk divides them.
    means = programs.divide(tuple(sums), np.float32(max(t1 - self.interval_start, 1)))
    self.sums, self.interval_start = None, t1
    return means

  def _event(self, step: int, means) -> None:
    """Logs / evaluates, snapshots and checkpoints at an event step, as the config asks."""
    if step in self.log_steps or step in self.eval_steps:
      self._log(step, means)
    if step in self.snap_steps:
      with self.phases("snapshot"):
        self._snapshot(step)
    if self.ckpt and (step == self.eng.total or time.monotonic() - self.last_ckpt > self.ckpt_gap):
      t = time.monotonic()
      with self.phases("checkpoint"):
        self.ckpt.save(step, programs.to_host(self.state))
      self.last_ckpt = time.monotonic()
      # At least checkpoint_every_secs apart and, unless that is 0 (every log step), at most
      # CHECKPOINT_SHARE of the time: a packed program's state grows with its members, and so does
      # each save.
      every = float(self.cfg.checkpoint_every_secs)
      self.ckpt_gap = max(every, (self.last_ckpt - t) / CHECKPOINT_SHARE) if every else 0.0

  def _log(self, step: int, means) -> None:
    n, eng = self.n_members, self.eng
    host = {
      "loss": programs.to_host(means[0], n),
      "batch_accuracy": programs.to_host(means[1], n),
      "alive": programs.to_host(self.state.alive, n),
    }
    if step in self.eval_steps:
      with self.phases("eval"):
        self.final_metrics = self._evaluate()
        host.update(self.final_metrics)
        if eng.probe is not None:
          for k, v in programs.to_host(eng.probe(self.state.params), n).items():
            host[f"probe/{k}"] = v
    with self.phases("log"):
      for rec in self.records:
        rec.log(step, eng.steps_per_epoch, host)
      self.prog.report(step, {k: records.mean_finite(v) for k, v in host.items() if k != "alive"})

  def _snapshot(self, step: int) -> None:
    host_params = programs.to_host(self.state.params, self.n_members)
    for rec in self.records:
      rec.snapshot(step, host_params, self.is_main)

  def _evaluate(self) -> dict[str, np.ndarray]:
    out = {}
    for key, (xs, ys, mask) in self.eval_data.items():
      res = programs.to_host(self.eng.evaluate(self.state.params, ys, xs, mask), self.n_members)
      out[f"{key}_loss"], out[f"{key}_accuracy"] = res[:, 0], res[:, 1]
    return out

  def results(self) -> list[TrainResult]:
    """One TrainResult per call, from its slice of the member axis."""
    host_state = programs.to_host(self.state, self.n_members)
    out = []
    for rec in self.records:
      sl, ids = rec.sl, rec.ids
      diverged = ~host_state.alive[sl]
      if diverged.any():
        logging.warning(
          "%s: seeds %s diverged (non-finite loss) and were frozen at steps %s.",
          self.name,
          [ids[i] for i in np.flatnonzero(diverged)],
          host_state.div_step[sl][diverged].tolist(),
        )
      out.append(
        TrainResult(
          params=jax.tree.map(lambda a: a[sl], host_state.params),
          seed_ids=ids,
          final_step=self.step,
          steps_per_epoch=self.eng.steps_per_epoch,
          diverged=diverged,
          diverged_step=host_state.div_step[sl],
          metrics=rec.metrics,
          snapshots=dict(sorted(rec.snapshots.items())),
          final_metrics={k: a[sl] for k, a in self.final_metrics.items()},
          layout=self.eng.layout.name,
        )
      )
    return out
