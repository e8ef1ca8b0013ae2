"""The engine config: its defaults, and the checks that run before anything is compiled.

`validate_fields(cfg, where)` checks every field that needs no data (the binaries call it on
config.train before writing anything to the workdir); `validate` adds the checks against the model
and the data.  Every message names the flag that fixes it, `--config.<where>.<field>=`.
"""

import math

import flax.linen as nn
import ml_collections
import numpy as np

from rl_align import errors
from rl_align import seeds
from rl_align.engine import feed as feed_lib
from rl_align.engine import layout as layout_lib

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def default_config() -> ml_collections.ConfigDict:
  """Engine defaults; every field can be overridden from an experiment config."""
  c = ml_collections.ConfigDict()
  c.optimizer = "momentum"  # sgd | momentum | adam (adam breaks the rotation symmetry)
  c.learning_rate = 0.01
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 0.0  # L2 decay added to the gradient (rotation-equivariant)
  c.schedule = "constant"  # constant | cosine | warmup_cosine | step
  c.warmup_steps = 0
  c.step_boundaries = ()  # fractions of training where lr *= step_factor (schedule=step)
  c.step_factor = 0.1
  c.batch_size = 128
  c.num_epochs = 10
  c.num_steps = 0  # > 0 overrides num_epochs
  c.num_seeds = 1
  c.seed = 0  # root seed; seed ids are seed_offset .. seed_offset+num_seeds-1
  c.seed_offset = 0
  c.member_lift = "auto"  # auto | vmap | unroll | map: how members run inside a device
  c.conv_impl = "auto"  # auto | lax | im2col | fused | pallas (conv models only)
  c.num_devices = 0  # devices the members are sharded over; 0: all (choose_devices)
  c.grad_microbatch = 0  # examples per gradient micro-batch; 0: auto (choose_microbatch)
  c.log_every_steps = 0  # 0: once per epoch
  c.eval_every_steps = 0  # 0: at every log step
  c.train_eval_examples = 2048  # train accuracy is measured on this many training examples
  c.eval_batch_size = 1024
  c.snapshot_steps = ()
  c.snapshot_epochs = ()
  # Checkpoint at the first log step after this many seconds (0: every log step), and, unless 0,
  # at most 5% of the time (`train.CHECKPOINT_SHARE`: a large packed state waits longer).
  c.checkpoint_every_secs = 60.0
  c.matmul_precision = (
    "default"  # default (JAX_DEFAULT_MATMUL_PRECISION, else XLA's) | high | highest
  )
  return c


def total_steps(cfg, n: int) -> int:
  return cfg.num_steps if cfg.num_steps > 0 else cfg.num_epochs * (n // cfg.batch_size)


def validate(
  cfg, model, x, labels, where: str = "train", feed: feed_lib.Feed | None = None
) -> None:
  """Raises ConfigError / DataError with the fix, before anything is compiled.  `x` is an array
  [N, ...] with `labels` [N] or [S, N]; or `feed` is the host feed the batches come from (x is
  that feed, labels None); `where`: the experiment config's field that holds cfg (for the
  messages' flags)."""
  if not isinstance(model, nn.Module):
    raise errors.ConfigError(
      f"model must be a flax.linen Module, got {type(model).__name__}. "
      "Fix: build it with rl_align.models.build(config.model)."
    )
  validate_fields(cfg, where)
  if feed is not None:
    _validate_feed(cfg, feed, labels)
    return
  x = np.asarray(x) if not hasattr(x, "shape") else x
  if x.ndim < 2:
    raise errors.DataError(
      f"training inputs must be [N, ...] with N examples, got shape {x.shape}."
    )
  n = x.shape[0]
  if not 1 <= cfg.batch_size <= n:
    _bad(
      where,
      "batch_size",
      f"must be in [1, N={n}] (the training set size), got {cfg.batch_size}",
      min(n, 128),
      "or use more training examples",
    )
  _validate_inputs(x)
  _validate_labels(cfg, model, labels, n)


def _bad(where: str, field: str, msg: str, example, more: str = "") -> None:
  """A ConfigError `config.<where>.<field>: <msg>. Fix: --config.<where>.<field>=<example>`."""
  flag = f"--config.{where}.{field}" if where else f"--config.{field}"
  raise errors.ConfigError(
    f"config.{flag[len('--config.') :]}: {msg}. Fix: {flag}={example}"
    + (f" {more}" if more else "")
    + "."
  )


def _finite_number(cfg, field: str) -> float | None:
  try:
    v = float(cfg[field])
  except (TypeError, ValueError):
    return None
  return v if math.isfinite(v) else None


def validate_fields(cfg, where: str = "train") -> None:
  """The checks that need no data: known choices, counts >= 1, finite hyper-parameters.  `where`:
  the experiment config's field that holds cfg ("" for a bare engine config)."""
  choices = (
    ("optimizer", OPTIMIZERS),
    ("schedule", SCHEDULES),
    ("member_lift", ("auto",) + layout_lib.MEMBER_LIFTS),
    ("conv_impl", ("auto",) + layout_lib.CONV_IMPLS),
  )
  for field, allowed in choices:
    if cfg[field] not in allowed:
      _bad(where, field, f"unknown value {cfg[field]!r}; choose one of {allowed}", allowed[0])
  lr = _finite_number(cfg, "learning_rate")
  if lr is None or lr <= 0:
    _bad(where, "learning_rate", f"must be a finite number > 0, got {cfg.learning_rate}", 0.01)
  for field, low in (("momentum", 0.0), ("weight_decay", 0.0), ("step_factor", 0.0)):
    v = _finite_number(cfg, field)
    if v is None or v < low:
      _bad(
        where,
        field,
        f"must be a finite number >= {low:g}, got {cfg[field]}",
        default_config()[field],
      )
  for field, low in (
    ("batch_size", 1),
    ("num_seeds", 1),
    ("eval_batch_size", 1),
    ("train_eval_examples", 0),
    ("num_devices", 0),
    ("grad_microbatch", 0),
    ("log_every_steps", 0),
    ("eval_every_steps", 0),
    ("warmup_steps", 0),
    ("seed", 0),
    ("seed_offset", 0),
  ):
    v = cfg.get(field, low)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
      _bad(
        where, field, f"must be an integer >= {low}, got {v!r}", max(low, default_config()[field])
      )
  m = int(cfg.get("grad_microbatch", 0))
  if m and cfg.batch_size % m:
    _bad(
      where,
      "grad_microbatch",
      f"must be 0 (automatic) or a divisor of batch_size={cfg.batch_size}, got {m}",
      0,
    )
  if cfg.num_steps <= 0 and cfg.num_epochs <= 0:
    _bad(where, "num_epochs", "num_epochs and num_steps are both <= 0: nothing to train", 10)
  secs = _finite_number(cfg, "checkpoint_every_secs")
  if secs is None or secs < 0:
    _bad(
      where,
      "checkpoint_every_secs",
      f"must be a finite number >= 0, got {cfg.checkpoint_every_secs}",
      60.0,
    )


def _validate_feed(cfg, feed: feed_lib.Feed, labels) -> None:
  if labels is not None:
    raise errors.ConfigError(
      "with a host feed the labels come from the feed: pass labels=None "
      "(the feed's `labels`: RandomLabels or the source's)."
    )
  if feed.batch_size != cfg.batch_size or feed.data_seed != cfg.seed:
    raise errors.ConfigError(
      f"the host feed draws batches of {feed.batch_size} in the order of root seed "
      f"{feed.data_seed}, but the config trains batch_size={cfg.batch_size}, seed={cfg.seed}. "
      "Fix: build the feed from the same engine config."
    )
  if list(feed.seed_ids) != seeds.seed_ids(cfg):
    raise errors.ConfigError(
      f"the host feed serves seed ids {list(feed.seed_ids)}, the config "
      f"trains {seeds.seed_ids(cfg)}. Fix: "
      "HostFeed(seed_ids=seeds.seed_ids(cfg))."
    )
  if isinstance(feed.labels, np.ndarray) and feed.labels.ndim == 2:
    raise errors.ConfigError(
      "a host feed with a per-member label table cannot be re-sharded over "
      "devices. Fix: pass pipeline.RandomLabels(root_seed, K) (labels from "
      "a function of the example index) or shared labels [N]."
    )
  if not 1 <= cfg.batch_size <= feed.n:
    _bad(
      "train", "batch_size", f"must be in [1, N={feed.n}], got {cfg.batch_size}", min(feed.n, 128)
    )


def _validate_inputs(x) -> None:
  if not np.issubdtype(x.dtype, np.floating):
    raise errors.DataError(
      f"training inputs must be floating point, got {x.dtype}. "
      "Fix: convert images to float32 (e.g. x / 255.) and standardize."
    )
  if not np.all(np.isfinite(np.asarray(x))):
    raise errors.DataError(
      "training inputs contain NaN or inf values. Fix: clean the data "
      "(rl_align.data.check_finite shows where) before training."
    )


def _validate_labels(cfg, model, labels, n: int) -> None:
  lab = np.asarray(labels)
  if lab.ndim not in (1, 2) or lab.shape[-1] != n:
    raise errors.DataError(f"labels must be [N] or [num_seeds, N] with N={n}, got {lab.shape}.")
  if lab.ndim == 2 and lab.shape[0] != cfg.num_seeds:
    raise errors.DataError(
      f"per-seed labels have {lab.shape[0]} rows but num_seeds={cfg.num_seeds}."
    )
  if not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0:
    raise errors.DataError("labels must be non-negative integers (class ids).")
  k = getattr(model, "num_classes", None)
  if k is not None and lab.max() >= k:
    raise errors.DataError(
      f"a label is {lab.max()} but the model has num_classes={k}. "
      f"Fix: set the model's num_classes to at least {lab.max() + 1}."
    )
