"""Transfer after random-label pretraining, and covariance-aligned initialization (the paper's
Figs 1 and 5, section 2.5): the arms' downstream inits, and the statistics of their curves.

Protocol (the paper's Fig 1 and Fig 5 experiments): one seeded permutation cuts a source split into
disjoint `upstream` and `downstream` sets (plus `test` when the source has no test split); inputs
are standardized per channel with the upstream statistics.  Upstream: num_seeds seeds trained on K
random labels (one draw per seed).  Downstream: every arm starts num_seeds seeds from its own init
and trains on the downstream set with the real labels (or fresh random labels), all with the same
data order per seed.  The orchestration is `rl_align.runners.transfer`.

Arms live in a registry (`register_arm`): an arm is ONE function ``(ctx: ArmContext, n) -> [one
params tree per seed]`` (n: the number of a family name such as covariance_L<n>, else None), so
adding an arm is writing one function.  `transfer_layers` = how many bottom layers are carried
over (0 = all but the head).

- scratch: the model's own init.
- pretrained: the weight-scaling control: each carried tensor rescaled to its L2 norm at (upstream)
  init; every other layer, the head included, fresh.
- pretrained_no_rescaling: the carried layers as trained; the rest fresh.
- covariance: the first layer re-drawn i.i.d. from N(0, Sigma_w), Sigma_w = E[w w^T] of the pretrained
  first-layer filters (as trained) pooled over the upstream seeds that fitted their random labels
  (train accuracy >= 2x chance, `claims.core.fit_gate`; every finished seed when none did, which
  `sigma_w_record` says); the rest fresh.
- covariance_rotated (control, beyond the paper): covariance's first layer, each seed's kernel
  rotated by its own Haar-random orthogonal Q (w -> Q w in the flattened (kh, kw, C) space): a draw
  from N(0, Q Sigma_w Q^T) with the same sample spectrum and norm as covariance's, and no
  alignment with the data.  covariance - covariance_rotated isolates the alignment's share.
- covariance_L<n>: as covariance, then layers 2..n re-drawn one by one (paper section 2.5) from
  V diag(f_l(lambda))^2 V^T, (lambda, V) of layer l's input covariance in the NEW network on the
  downstream data, f_l measured on the pretrained seeds against their own layer-l inputs (upstream
  data), pooled over seeds (`init.measure_layer_transfer`).  covariance = covariance_L1.
- pca_whitening (peer, airbench's whitening conv): the first layer's first 2 * min(F/2, d) filters are
  +-v_i / sqrt(lambda_i + eps) of the downstream data's patch covariance (top eigenpairs first), the
  remaining filters keep the fresh init; the layer is trained like the others (airbench freezes it).
  No upstream information is used.
- f_only (peer): the first layer drawn from V diag(f(lambda))^2 V^T with (lambda, V) of the DOWNSTREAM
  data's patch covariance and f measured on another dataset (`ArmContext.f_source`, see the runner).

`rescale_sampled` (default True): every layer drawn by covariance, covariance_L<n> and f_only is
scaled, per seed, to the L2 norm of its fresh init -- the weight-scaling control the pretrained arm
gets, so that these arms are compared with `pretrained` on structure alone.

Seeds that diverged never enter a statistic: an arm's entry carries `finished` [S] (its own
engine's flags, and for the arms that carry a pretrained seed, that upstream seed's), and
`summarize` uses the finished seeds only.

Usage::

    from rl_align import transfer
    from rl_align.runners import transfer as transfer_runner
    transfer.check_arms(["covariance_L3", "pretrained"])     # ['scratch', 'pretrained', 'covariance_L3']
    out = transfer_runner.run(config, workdir)                # the experiment; never imported here
    out["arms"]["covariance"]["train_accuracy"]               # [S][T] at out["arms"][...]["iterations"]
    transfer.summarize(out["arms"], [0.6], [100])["speedup"]  # scratch iterations / arm iterations
"""

import dataclasses
import re
from typing import Any, Callable, Mapping

import flax
import jax
import numpy as np

from rl_align import alignment
from rl_align import covariance
from rl_align import curves
from rl_align import errors
from rl_align import init as init_lib
from rl_align import models
from rl_align import seeds
from rl_align.claims import core as claims_core

# fold_in tags of the downstream seeds' extra streams.
_FRESH, _SAMPLE, _ROTATE = 21, 22, 23


# ----------------------------------------------------------------------------------------------
# The registry.


@dataclasses.dataclass(frozen=True)
class Arm:
  """A registered arm: its builder and how it is drawn (label, colour, line style)."""

  name: str  # e.g. "covariance" or the family "covariance_L<n>"
  build: Callable[["ArmContext", int | None], list]
  label: str  # may use {n}
  color: str | tuple[str, ...]  # a family: one colour per n (cycled)
  linestyle: str = "-"
  n: int | None = None  # the number a plain name stands for (covariance: 1)
  uses_upstream: Callable[[Any], bool] = lambda config: True
  carries_seeds: bool = False  # seed i starts from upstream seed i


_REGISTRY: dict[str, Arm] = {}
_FAMILY = "<n>"


def register_arm(
  name: str,
  *,
  label: str,
  color: str | tuple[str, ...],
  linestyle: str = "-",
  n: int | None = None,
  uses_upstream: Callable[[Any], bool] = lambda config: True,
  carries_seeds: bool = False,
):
  """Decorator: registers `fn(ctx, n) -> [params per seed]` as arm `name` (a name ending in "<n>"
  is a family: covariance_L<n> matches covariance_L2, covariance_L3, ...)."""

  def deco(fn):
    _REGISTRY[name] = Arm(name, fn, label, color, linestyle, n, uses_upstream, carries_seeds)
    return fn

  return deco


def resolve(arm: str) -> tuple[Arm, int | None]:
  """(registered arm, n) of an arm name; a ConfigError naming the known arms otherwise."""
  spec = _REGISTRY.get(str(arm))
  if spec is not None and not spec.name.endswith(_FAMILY):
    return spec, spec.n
  for spec in _REGISTRY.values():
    if spec.name.endswith(_FAMILY):
      m = re.fullmatch(re.escape(spec.name[: -len(_FAMILY)]) + r"([1-9]\d*)", str(arm))
      if m:
        return spec, int(m.group(1))
  raise errors.ConfigError(
    f"unknown arm {arm!r}. Fix: use names from {tuple(_REGISTRY)} (covariance_L<n> for any n >= 1)."
  )


def arm_names() -> tuple[str, ...]:
  """The registered arm names (families as "covariance_L<n>")."""
  return tuple(_REGISTRY)


def style(arm: str, i: int = 0) -> tuple[str, str, str]:
  """(colour, line style, label) of an arm in every figure (unknown names: colour cycle)."""
  try:
    spec, n = resolve(arm)
  except errors.ConfigError:
    return f"C{i % 10}", "-", str(arm)
  color = spec.color if isinstance(spec.color, str) else spec.color[(n - 1) % len(spec.color)]
  return color, spec.linestyle, spec.label.format(n=n)


def check_arms(arms) -> list[str]:
  """The arm names, validated; scratch first (every speed-up is relative to it)."""
  bad = []
  for a in arms:
    try:
      resolve(a)
    except errors.ConfigError:
      bad.append(a)
  if bad:
    raise errors.ConfigError(
      f"config.arms has unknown arms {bad}. Fix: use names from "
      f"{arm_names()} (covariance_L<n> for any n >= 1)."
    )
  arms = list(dict.fromkeys(str(a) for a in arms))
  return ["scratch"] + [a for a in arms if a != "scratch"]


def uses_upstream(arm: str, config) -> bool:
  """Whether the arm needs the upstream (random-label) run of config."""
  return resolve(arm)[0].uses_upstream(config)


def carries_seeds(arm: str) -> bool:
  """Whether the arm's seed i starts from upstream seed i (so it fails with that seed)."""
  return resolve(arm)[0].carries_seeds


# ----------------------------------------------------------------------------------------------
# The context every arm builds from.


class ArmContext:
  """What the arms build from, with the caches they share (built arms, Sigma_w, f_l).

  Args:
    config: the experiment config (downstream.seed, train.seed_offset / num_seeds,
      transfer_layers, layerwise, pca_whitening, rescale_sampled).
    model_down, model_up: the downstream / upstream models.
    pretrained, pretrained_init: stacked upstream params [S, ...] at the end / at init ({} if no
      arm needs them).
    upstream_diverged: [S] bool, the upstream seeds that diverged (None: none).
    upstream_fit: [S] random-label train accuracy of the upstream seeds, with upstream_classes K
      (None: every finished seed counts as fitted).
    x_up, x_down: the standardized upstream / downstream inputs.
    f_source: () -> init.TransferFunction, the f of the f_only arm (given by the runner).
  """

  def __init__(
    self,
    config,
    model_down,
    model_up,
    pretrained,
    pretrained_init,
    x_up,
    x_down,
    *,
    upstream_diverged=None,
    upstream_fit=None,
    upstream_classes: int = 10,
    f_source: Callable[[], Any] | None = None,
  ):
    self.config, self.model, self.model_up = config, model_down, model_up
    self.x_up, self.x_down, self.f_source = x_up, x_down, f_source
    root = int(config.downstream.seed)
    ids = seeds.seed_ids(config.train)
    x1 = x_down[:1]
    self.fresh = [
      model_down.init(jax.random.fold_in(seeds.seed_key(root, i, _FRESH), 0), x1)["params"]
      for i in ids
    ]
    self.sample_keys = [seeds.seed_key(root, i, _SAMPLE) for i in ids]
    self.layers = models.layer_names(self.fresh[0])
    self.pretrained = init_lib.unstack(pretrained)
    self.pretrained_init = init_lib.unstack(pretrained_init)
    self.upstream_finished = curves.finished_seeds(upstream_diverged, len(self.pretrained))
    self.upstream_fit, self.upstream_classes = upstream_fit, int(upstream_classes)
    n_t = int(config.transfer_layers)
    self.carried = self.layers[:-1] if n_t <= 0 else self.layers[: min(n_t, len(self.layers) - 1)]
    self.n_ex = int(config.layerwise.num_examples)
    self.transfer_functions: dict[str, init_lib.TransferFunction] = {}
    self._built: dict[tuple, list] = {}
    self._sigma_w = None

  def build(self, arm: str) -> list:
    """The arm's downstream init, one params tree per seed (cached)."""
    spec, n = resolve(arm)
    key = (spec.build, n)  # covariance and covariance_L1 are one init
    if key not in self._built:
      self._built[key] = spec.build(self, n)
    return self._built[key]

  def finished_pretrained(self) -> list:
    """The pretrained params of the upstream seeds that finished, one tree per seed."""
    ok = [p for p, f in zip(self.pretrained, self.upstream_finished) if f]
    if not ok:
      raise errors.NumericalError(curves.all_diverged(len(self.pretrained), "upstream seeds"))
    return ok

  def carry(self, sources: list) -> list:
    """Fresh params with the carried layers taken from sources[i] (one tree per seed)."""
    out = []
    for fresh, src in zip(self.fresh, sources):
      p = dict(fresh)
      for layer in self.carried:
        p = init_lib.replace_layer(p, src, layer)
      out.append(p)
    return out

  def _fit_gate(self):
    return claims_core.fit_gate(
      self.upstream_fit, self.upstream_classes, np.asarray(self.upstream_finished, bool)
    )

  def sigma_w_seeds(self) -> np.ndarray:
    """[S] bool: the upstream seeds Sigma_w pools: those that fitted their random labels, or every
    finished one when none did (or no fit was given)."""
    fin = np.asarray(self.upstream_finished, bool)
    if self.upstream_fit is None:
      return fin
    gate = self._fit_gate()
    return gate.ok if gate.reached else fin

  def sigma_w_record(self) -> dict[str, Any]:
    """Which upstream seeds Sigma_w pools (results.json `sigma_w`)."""
    fitted = 0 if self.upstream_fit is None else int(self._fit_gate().ok.sum())
    use = self.sigma_w_seeds()
    return {
      "seeds": "fitted" if fitted else "finished (none fitted)",
      "num_seeds": int(use.sum()),
      "num_fitted": fitted,
      "pooled": use,
    }

  def sigma_w(self) -> np.ndarray:
    """E[w w^T] of the pretrained first-layer filters (as trained) pooled over `sigma_w_seeds`."""
    if self._sigma_w is None:
      use = self.sigma_w_seeds()
      if not use.any():
        raise errors.NumericalError(curves.all_diverged(len(self.pretrained), "upstream seeds"))
      kernels = np.stack(
        [np.asarray(p[self.layers[0]]["kernel"]) for p, u in zip(self.pretrained, use) if u]
      )
      self._sigma_w = covariance.weight_covariance(kernels)
    return self._sigma_w

  def rescaled(self, params_list: list, layer: str) -> list:
    """With config.rescale_sampled: each seed's `layer` scaled to the L2 norm of its fresh init."""
    if not self.config.get("rescale_sampled", True):
      return params_list
    return [
      init_lib.replace_layer(p, {layer: init_lib.rescale_to_init(p[layer], fr[layer])}, layer)
      for p, fr in zip(params_list, self.fresh)
    ]

  def first_kernel_shape(self) -> tuple[int, ...]:
    return np.asarray(self.fresh[0][self.layers[0]]["kernel"]).shape

  def with_first(self, kernels) -> list:
    """Fresh params with the first layer's kernel replaced, one kernel per seed."""
    out = []
    for fresh, k in zip(self.fresh, kernels):
      p = flax.core.unfreeze(fresh)
      p[self.layers[0]] = dict(p[self.layers[0]], kernel=np.asarray(k))
      out.append(p)
    return out

  def sampled_first(self, kernel_init) -> list:
    """Fresh params whose first layer is drawn from `kernel_init` (one key per seed), rescaled."""
    shape = self.first_kernel_shape()
    out = self.with_first([kernel_init(jax.random.fold_in(k, 0), shape) for k in self.sample_keys])
    return self.rescaled(out, self.layers[0])

  def downstream_patch_covariance(self) -> np.ndarray:
    """Covariance of the first layer's input samples (patches) over the downstream inputs."""
    samples = init_lib.input_samples(self.x_down[: self.n_ex], self.first_kernel_shape())
    return covariance.data_covariance(samples)[1]

  def f_layer_checks(self, layer: str) -> None:
    """Section 2.5 diagnostics of f_l, kept in transfer_functions beside it: `layer@init` is f_l of
    the pretrained seeds at their init (the level f_l departs from), `layer@half0` / `@half1` of
    each half of the finished seeds (their difference: how well the pooled f_l is estimated)."""
    if f"{layer}@init" in self.transfer_functions:
      return
    ok = [i for i, fin in enumerate(self.upstream_finished) if fin]
    bins = int(self.config.layerwise.num_bins) or None
    x = self.x_up[: self.n_ex]
    measure = lambda ps: init_lib.measure_layer_transfer(self.model_up, ps, x, layer, num_bins=bins)
    self.transfer_functions[f"{layer}@init"] = measure([self.pretrained_init[i] for i in ok])
    if len(ok) >= 2:
      h = len(ok) // 2
      self.transfer_functions[f"{layer}@half0"] = measure([self.pretrained[i] for i in ok[:h]])
      self.transfer_functions[f"{layer}@half1"] = measure([self.pretrained[i] for i in ok[h:]])

  def f_layer(self, layer: str) -> init_lib.TransferFunction:
    """f_l of `layer`, measured on the finished pretrained seeds against their upstream inputs."""
    if layer not in self.transfer_functions:
      self.transfer_functions[layer] = init_lib.measure_layer_transfer(
        self.model_up,
        self.finished_pretrained(),
        self.x_up[: self.n_ex],
        layer,
        num_bins=int(self.config.layerwise.num_bins) or None,
      )
    return self.transfer_functions[layer]


# ----------------------------------------------------------------------------------------------
# The arms.


@register_arm("scratch", label="from scratch", color="k", uses_upstream=lambda config: False)
def scratch(ctx: ArmContext, n=None) -> list:
  del n
  return list(ctx.fresh)


@register_arm("pretrained", label="pretrained (rescaled)", color="tab:blue", carries_seeds=True)
def pretrained(ctx: ArmContext, n=None) -> list:
  del n
  return ctx.carry(
    [init_lib.rescale_to_init(p, p0) for p, p0 in zip(ctx.pretrained, ctx.pretrained_init)]
  )


@register_arm(
  "pretrained_no_rescaling", label="no rescaling", color="0.45", linestyle="--", carries_seeds=True
)
def pretrained_no_rescaling(ctx: ArmContext, n=None) -> list:
  del n
  return ctx.carry(ctx.pretrained)


@register_arm(
  "covariance_L<n>",
  label="covariance L={n}",
  color=("tab:red", "tab:orange", "tab:brown", "tab:pink", "tab:olive"),
)
@register_arm("covariance", label="covariance", color="tab:red", n=1)
def covariance_layers(ctx: ArmContext, n: int) -> list:
  """Layer 1 from N(0, Sigma_w); layers 2..n one by one from V diag(f_l(lambda))^2 V^T."""
  if n == 1:
    return ctx.sampled_first(init_lib.covariance_init(ctx.sigma_w()))
  if n > len(ctx.layers):
    raise errors.ConfigError(
      f"arm covariance_L{n} samples {n} layers but the model has only "
      f"{len(ctx.layers)} ({ctx.layers}). Fix: use L <= {len(ctx.layers)}."
    )
  return _sampled_above(ctx, ctx.build(f"covariance_L{n - 1}"), n)


def _sampled_above(ctx: ArmContext, below: list, n: int) -> list:
  """`below` (one params tree per seed) with layer n drawn from V diag(f_n(lambda))^2 V^T: V, lambda
  of layer n's inputs in the new network, f_n measured on the pretrained one (section 2.5)."""
  layer = ctx.layers[n - 1]
  f = ctx.f_layer(layer)
  ctx.f_layer_checks(layer)
  x = ctx.x_down[: ctx.n_ex]
  out = [
    init_lib.sample_layer(ctx.model, p, x, layer, f, jax.random.fold_in(k, n - 1))[0]
    for p, k in zip(below, ctx.sample_keys)
  ]
  return ctx.rescaled(out, layer)


@register_arm(
  "covariance_rotated", label="covariance, rotated (control)", color="tab:olive", linestyle="--"
)
def covariance_rotated(ctx: ArmContext, n=None) -> list:
  """covariance's first layer with each seed's kernel rotated by a Haar-random Q of its own."""
  del n
  shape = ctx.first_kernel_shape()
  d = int(np.prod(shape[:-1]))
  kernels = []
  for p, key in zip(ctx.build("covariance"), ctx.sample_keys):
    q = alignment.random_basis(jax.random.fold_in(key, _ROTATE), d)
    w = np.asarray(p[ctx.layers[0]]["kernel"], np.float64).reshape(d, shape[-1])
    kernels.append((q @ w).reshape(shape).astype(np.float32))
  return ctx.with_first(kernels)


@register_arm(
  "pretrained_f_L2",
  label="pretrained L1 + f-sampled L2",
  color="tab:cyan",
  linestyle="--",
  carries_seeds=True,
)
def pretrained_f_l2(ctx: ArmContext, n=None) -> list:
  """Section 2.5 isolated: layer 1 as the pretrained arm's (rescaled), layer 2 drawn from the
  pretrained network's f_2 in the new network's layer-2 input basis (no covariance-sampled
  layer 1 under it)."""
  del n
  if len(ctx.layers) < 3:
    raise errors.ConfigError(
      f"arm pretrained_f_L2 samples layer 2 below the head, but the model "
      f"has layers {ctx.layers}. Fix: drop the arm."
    )
  return _sampled_above(ctx, ctx.build("pretrained"), 2)


@register_arm(
  "pca_whitening",
  label="PCA whitening (peer)",
  color="tab:green",
  linestyle=":",
  uses_upstream=lambda config: False,
)
def pca_whitening(ctx: ArmContext, n=None) -> list:
  del n
  shape = ctx.first_kernel_shape()
  w = init_lib.whitening_filters(
    ctx.downstream_patch_covariance(), shape[-1], float(ctx.config.pca_whitening.eps)
  )
  used = np.any(w != 0, axis=0)
  kernels = []
  for fresh in ctx.fresh:
    k = np.asarray(fresh[ctx.layers[0]]["kernel"]).reshape(-1, shape[-1]).copy()
    k[:, used] = w[:, used]
    kernels.append(k.reshape(shape).astype(np.float32))
  return ctx.with_first(kernels)


@register_arm(
  "f_only",
  label="f only (peer)",
  color="tab:purple",
  linestyle="-.",
  uses_upstream=lambda config: config.f_only.source == "upstream",
)
def f_only(ctx: ArmContext, n=None) -> list:
  del n
  f = ctx.f_source()
  ctx.transfer_functions["f_only"] = f
  return ctx.sampled_first(init_lib.transfer_init(ctx.downstream_patch_covariance(), f))


# Every registered arm, a family as its members 2 and 3: the default arms of the Fig 5 configs.
ARMS = tuple(
  m
  for a in _REGISTRY
  for m in ([a[: -len(_FAMILY)] + "2", a[: -len(_FAMILY)] + "3"] if a.endswith(_FAMILY) else [a])
)


# ----------------------------------------------------------------------------------------------
# Statistics of the downstream curves (finished seeds only).


def finished(entry: Mapping[str, Any]) -> np.ndarray:
  """[S] bool: the seeds of an arm's results entry that enter statistics (default: all)."""
  flags = entry.get("finished")
  if flags is None:
    return np.ones(len(np.atleast_2d(entry["train_accuracy"])), bool)
  return np.asarray(flags, bool)


def finished_accuracy(entry: Mapping[str, Any]) -> np.ndarray:
  """[S_finished, T] downstream train accuracy of the seeds that finished."""
  return np.atleast_2d(np.asarray(entry["train_accuracy"], np.float64))[finished(entry)]


def arm_summary(acc, test, diverged, upstream_diverged=None) -> dict[str, Any]:
  """An arm's results entry: per-seed arrays of every seed, means and stds of the finished ones."""
  acc, test = np.asarray(acc, np.float64), np.asarray(test, np.float64)
  done = ~np.asarray(diverged, bool)
  if upstream_diverged is not None:
    done &= ~np.asarray(upstream_diverged, bool)
  m, s = curves.seed_mean_std(acc[done])
  tm, ts = curves.seed_mean_std(test[done])
  return {
    "train_accuracy": acc,
    "test_accuracy": test,
    "train_accuracy_mean": m,
    "train_accuracy_std": s,
    "test_accuracy_mean": float(tm),
    "test_accuracy_std": float(ts),
    "diverged": np.asarray(diverged, bool),
    "upstream_diverged": (
      np.zeros(len(done), bool)
      if upstream_diverged is None
      else np.asarray(upstream_diverged, bool)
    ),
    "finished": done,
    "num_diverged": int((~done).sum()),
  }


def summarize(arms: Mapping[str, Mapping[str, Any]], thresholds, report_steps) -> dict[str, Any]:
  """speedup {arm: {thr: scratch/arm iterations}}, iterations_to_reach {arm: {thr: mean}} and
  table {arm: {step: [mean, std]}} (nearest logged step to each report step); finished seeds only."""
  ref = arms["scratch"]
  steps = np.asarray(ref["iterations"])
  a_ref = finished_accuracy(ref)
  speed, reach, table = {}, {}, {}
  for arm, r in arms.items():
    acc = finished_accuracy(r)
    reach[arm] = {
      f"{t:g}": (
        float(np.mean(curves.iterations_to_reach(steps, acc, t))) if len(acc) else float("nan")
      )
      for t in thresholds
    }
    if arm != "scratch":
      speed[arm] = {f"{t:g}": curves.speedup(steps, a_ref, acc, t) for t in thresholds}
    m, s = curves.seed_mean_std(acc)
    table[arm] = {}
    for st in report_steps:
      j = int(np.argmin(np.abs(steps - st)))
      table[arm][str(int(steps[j]))] = [float(m[j]), float(s[j])]
  return {"speedup": speed, "iterations_to_reach": reach, "table": table}


def _cell(m, s) -> str:
  return "nan" if m is None or s is None else f"{m:.3f}±{s:.3f}"


def summary_table(out: Mapping[str, Any]) -> str:
  """A plain-text table: train accuracy (mean +- std) per arm at the report steps, test accuracy,
  speed-ups, seeds that diverged."""
  arms = out["arms"]
  first = next(iter(out["table"].values()))
  cols = list(first)
  lines = [
    "arm".ljust(24)
    + "".join(f"it {c}".rjust(15) for c in cols)
    + "test".rjust(15)
    + "".join(f"x@{t}".rjust(9) for t in out["speedup"].get(next(iter(out["speedup"]), ""), {}))
  ]
  for arm, row in out["table"].items():
    cells = "".join(_cell(m, s).rjust(15) for m, s in row.values())
    test = _cell(arms[arm]["test_accuracy_mean"], arms[arm]["test_accuracy_std"]).rjust(15)
    sp = "".join(
      (f"{v:.2f}" if v is not None else "nan").rjust(9)
      for v in out["speedup"].get(arm, {}).values()
    )
    n_div = arms[arm].get("num_diverged", 0)
    lines.append(
      arm.ljust(24) + cells + test + sp + (f"  ({n_div} seeds diverged)" if n_div else "")
    )
  if out.get("upstream"):
    ua = np.asarray(out["upstream"]["train_accuracy"], np.float64)
    ok = curves.finished_seeds(out["upstream"].get("diverged"), len(ua))
    m, s = curves.seed_mean_std(ua[ok])
    lines.append(
      f"upstream random-label train accuracy: {_cell(m, s)} "
      f"(ok={out['upstream']['ok']}, {int((~ok).sum())} seeds diverged)"
    )
  verdicts = (out.get("claims") or {}).get("verdicts", {})
  lines += [f"claim {k}: {v}" for k, v in verdicts.items()]
  return "\n".join(lines)
