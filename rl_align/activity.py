"""Per-layer ReLU activity on a fixed probe batch: how many units fire, and how many are dead.

Three numbers per ReLU layer (the paper's section 3, specialization), over a fixed probe batch:

- ``active_fraction``: mean over units, positions and examples of ``relu > 0``;
- ``dead_fraction``: fraction of units never active on the probe batch.  A unit is a neuron of a
  dense layer or a channel (filter) of a conv layer; a conv channel is dead when it is inactive at
  every position of every probe example;
- ``mean_activation``: mean of the ReLU outputs.

Usage::

    from rl_align import activity, train
    probe = activity.make_probe_fn(x_probe)          # jit-compatible probe_fn for the engine
    res = train.train(model, cfg, x, labels, probe_fn=probe)
    # metrics rows carry probe/<layer>/active_fraction, probe/<layer>/dead_fraction, ...
    curves = activity.curves_from_metrics(res.metrics)
    curves["dense_1"]["steps"], curves["dense_1"]["active_fraction"]   # [T], [S, T]

    stats = activity.measure(model, stacked_params, x_probe)   # outside the engine: {layer: {stat: [S]}}

The activations come from ``rl_align.models.activations`` (layers ``sow`` their ReLU outputs);
any function ``(model, params, x) -> {layer: {"relu": array, ...}}`` can replace it.
"""

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rl_align import curves
from rl_align import errors
from rl_align import models

STATS = ("active_fraction", "dead_fraction", "mean_activation")
PREFIX = "probe/"

ActivationsFn = Callable[[Any, Any, Any], Mapping[str, Mapping[str, Any]]]


def unit_activity(relu) -> dict[str, jax.Array]:
  """The three STATS of one layer's ReLU outputs [B, ..., units] (units on the last axis)."""
  relu = jnp.asarray(relu)
  if relu.ndim < 2:
    raise errors.DataError(
      f"ReLU outputs must be [batch, ..., units], got shape {relu.shape}. "
      "Fix: pass a batch of probe examples, not a single example."
    )
  on = relu > 0
  ever_on = on.reshape(-1, on.shape[-1]).any(axis=0)
  return {
    "active_fraction": on.mean(dtype=jnp.float32),
    "dead_fraction": 1.0 - ever_on.mean(dtype=jnp.float32),
    "mean_activation": relu.mean(dtype=jnp.float32),
  }


def layer_activity(
  acts: Mapping[str, Mapping[str, Any]], layers: Sequence[str] | None = None
) -> dict[str, dict[str, jax.Array]]:
  """{layer: STATS} for every layer of `acts` that has ReLU outputs (or the named `layers`)."""
  names = [k for k, v in acts.items() if "relu" in v] if layers is None else list(layers)
  missing = [k for k in names if k not in acts or "relu" not in acts[k]]
  if missing:
    have = [k for k, v in acts.items() if "relu" in v]
    raise errors.ConfigError(
      f"activity layers {missing} have no ReLU outputs; this model's ReLU "
      f"layers are {have}. Fix: pick layers from that list (or pass none)."
    )
  return {k: unit_activity(acts[k]["relu"]) for k in names}


def probe_metrics(
  model,
  params,
  x_probe,
  *,
  layers: Sequence[str] | None = None,
  activations_fn: ActivationsFn | None = None,
) -> dict[str, jax.Array]:
  """Flat {"<layer>/<stat>": scalar} for ONE seed's params; jit-compatible."""
  fn = activations_fn or models.activations
  stats = layer_activity(fn(model, params, x_probe), layers)
  return {f"{layer}/{k}": v for layer, s in stats.items() for k, v in s.items()}


def make_probe_fn(
  x_probe, *, layers: Sequence[str] | None = None, activations_fn: ActivationsFn | None = None
) -> Callable[[Any, Any], dict]:
  """A `probe_fn(model, params)` for `train.train`: activity STATS of every ReLU layer on x_probe.

  The engine logs them at its eval steps as ``probe/<layer>/<stat>``.  Keep x_probe small (a few
  hundred examples): it is a constant of the compiled program.
  """
  x = np.asarray(x_probe, np.float32)
  if x.ndim < 2 or len(x) == 0:
    raise errors.DataError(
      f"the probe batch must be [B, ...] with B >= 1 examples, got shape "
      f"{x.shape}. Fix: pass e.g. x_train[:256]."
    )
  if not np.all(np.isfinite(x)):
    raise errors.DataError(
      "the probe batch contains NaN or inf. Fix: standardize it like the "
      "training inputs and drop bad examples."
    )

  def probe_fn(model, params):
    return probe_metrics(
      model, params, jnp.asarray(x), layers=layers, activations_fn=activations_fn
    )

  return probe_fn


def measure(
  model,
  stacked_params,
  x_probe,
  *,
  layers: Sequence[str] | None = None,
  activations_fn: ActivationsFn | None = None,
) -> dict[str, dict[str, np.ndarray]]:
  """{layer: {stat: [S]}} for params with a leading seed axis (outside the engine, e.g. at init)."""
  x = jnp.asarray(np.asarray(x_probe, np.float32))
  one = jax.jit(lambda p: probe_metrics(model, p, x, layers=layers, activations_fn=activations_fn))
  s = jax.tree.leaves(stacked_params)[0].shape[0]
  rows = [one(jax.tree.map(lambda a, i=i: a[i], stacked_params)) for i in range(s)]
  flat = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
  return by_layer(flat)


def by_layer(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """{"<layer>/<stat>": v} (optionally prefixed with "probe/") -> {layer: {stat: v}}, layers in
  forward order (`models.sort_layers`)."""
  out: dict[str, dict[str, Any]] = {}
  for key, v in flat.items():
    key = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    layer, _, stat = key.rpartition("/")
    if stat in STATS and layer:
      out.setdefault(layer, {})[stat] = v
  return {k: out[k] for k in models.sort_layers(out)}


def curves_from_metrics(
  rows: Sequence[Mapping[str, Any]], *, phase: str | None = None, seeds: Sequence[int] | None = None
) -> dict[str, dict[str, np.ndarray]]:
  """Activity curves from engine metrics rows: {layer: {"steps": [T], stat: [S, T]}}.

  Only rows with probe keys (eval steps) count; `phase` keeps one engine phase, `seeds` picks and
  orders the seed ids (default: all, ascending).  A missing value is nan.
  """
  rows = [r for r in rows if phase is None or r.get("phase") == phase]
  keys = sorted({k for r in rows for k in r if k.startswith(PREFIX)})
  if not keys:
    return {}
  steps, arrays = curves.from_metrics(rows, keys, seeds=seeds)
  out = by_layer(arrays)
  for layer in out:
    out[layer]["steps"] = steps.copy()
  return out
