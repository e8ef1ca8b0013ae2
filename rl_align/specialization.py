"""Specialization and negative transfer (the paper's section 3): random-label pretraining, then
real labels.  The sweep's pieces and statistics; the experiment is `rl_align.runners.specialization`.

For every sweep point (width of the later layers, learning rate, number of random classes K,
upstream length L) a network is trained on K random labels (upstream), its hidden layers are
carried over to a disjoint split with the real labels (downstream, head re-initialized), and its
downstream training speed is compared with training from scratch.  Per-layer ReLU activity
(`rl_align.activity`) is tracked on a fixed probe batch across the switch.

Sweep points share engine runs where the shapes allow it (one upstream and one downstream run per
(width, learning rate)):

- the K values share one upstream run: the head has max(K) outputs and the seeds of point K draw
  their labels in [0, K) (the unused logits are only ever pushed down);
- the upstream lengths L are snapshots of that one run at step L;
- every downstream arm (pretrained / rescaled, each K and L) and the scratch baseline are seed
  blocks of one downstream run started from `init_params`.

A downstream seed enters the statistics only when it and the upstream seed it carries finished
(did not diverge); a point none of whose seeds (or none of whose scratch seeds) finished carries
`error` instead of a gain and activity numbers.

Usage::

    from rl_align import specialization
    from rl_align.runners import specialization as spec_runner
    out = spec_runner.run(config, workdir)        # the experiment (this module never imports it)
    out["points"]["w=32,lr=0.02,K=50,L=4000,arm=pretrained"]["gain"]

    g = specialization.gain_stats(steps, acc_scratch, acc_pretrained, threshold=0.95)
    d = specialization.activity_drop(steps, active_fraction_after, before, window=20)

results.json: see `rl_align.runners.specialization.run` (documented in the README).
"""

import copy
from typing import Any, Mapping

import ml_collections
import numpy as np

from rl_align import activity
from rl_align import curves
from rl_align import errors
from rl_align import init as init_lib
from rl_align import models

ARMS = ("pretrained", "rescaled")
SCRATCH = "scratch"


# ----------------------------------------------------------------------------------------------
# Small pure helpers.


def point_id(width, lr, k, length, arm) -> str:
  """The key of one sweep point in results.json, e.g. 'w=32,lr=0.02,K=50,L=4000,arm=pretrained'."""
  return f"w={width},lr={lr:g},K={k},L={length},arm={arm}"


def with_width(model_cfg, field: str, start: int, width: int) -> ml_collections.ConfigDict:
  """A copy of model_cfg whose `field` is `width` (scalar field) or whose entries from `start` on
  are `width` (tuple field, e.g. the later layers of a dense net's `widths`)."""
  cfg = ml_collections.ConfigDict(copy.deepcopy(model_cfg.to_dict()))
  if field not in cfg:
    raise errors.ConfigError(
      f"config.sweep.width_field={field!r} is not a field of config.model ({sorted(cfg)}). "
      "Fix: name the model field that sets the later layers' width, e.g. 'widths'."
    )
  old = cfg[field]
  if isinstance(old, (tuple, list)):
    if not 0 <= start < len(old):
      raise errors.ConfigError(
        f"config.sweep.width_from={start} is outside config.model.{field}={tuple(old)}. "
        f"Fix: use an index in [0, {len(old)}) (the first later layer)."
      )
    cfg[field] = tuple(old[:start]) + (int(width),) * (len(old) - start)
  else:
    cfg[field] = type(old)(width) if isinstance(old, (int, float)) else width
  return cfg


def head_name(params) -> str:
  """The output layer: the last layer in `models.layer_names` (forward) order."""
  return models.layer_names(params)[-1]


def transfer_init(snapshot, fresh, init_snapshot=None):
  """Downstream starting params of one arm, stacked over seeds: the upstream `snapshot` with the
  head taken from `fresh`; with `init_snapshot` (the upstream init) every tensor is first rescaled
  to its init L2 norm (the weight-scaling control, `init.weight_scaling_control`)."""
  head = head_name(fresh)
  if init_snapshot is None:
    return init_lib.replace_layer(snapshot, fresh, head)
  return init_lib.stack(
    [
      init_lib.weight_scaling_control(p, p0, f, head)
      for p, p0, f in zip(
        init_lib.unstack(snapshot), init_lib.unstack(init_snapshot), init_lib.unstack(fresh)
      )
    ]
  )


def gain_stats(
  steps,
  acc_scratch,
  acc_arm,
  threshold: float,
  *,
  n_boot: int = 2000,
  seed: int = 0,
  diverged_scratch=None,
  diverged_arm=None,
) -> dict[str, Any]:
  """Downstream speed-up of an arm over scratch: mean iterations of scratch / of the arm.

  Args:
    steps: [T] logged steps (starting at 0 preferably).
    acc_scratch, acc_arm: [S, T] accuracy curves of the two arms.
    threshold: the accuracy both arms must reach.
    diverged_scratch, diverged_arm: [S] flags of seeds left out of every statistic (None: none).

  Returns gain (`curves.speedup`, nan when a seed never reaches the threshold), gain_censored
  (never-reached seeds counted at the last step; then a bound, `censored` says which way),
  gain_ci [5%, 95%] (bootstrap over seeds of both arms, censored counts), gain_seed_std (std of
  scratch_mean / arm_seed), iterations and reached fractions of both arms, and auc_difference
  (mean over the run of arm minus scratch seed-mean accuracy; > 0: the arm is ahead),
  accuracy_behind_fraction / accuracy_ahead_fraction (`behind_fraction`: the share of logged steps
  after step 0 at which the arm's seed mean is below / above scratch's by more than one standard
  error of the difference; `accuracy_behind_fraction_2se`: by more than two).  The
  per-seed arrays (iterations, iterations_scratch, gain_seeds) keep every seed; without a finished
  seed in either arm the statistics are nan and `error` says why.
  """
  steps = np.asarray(steps, np.float64)
  a_s, a_a = np.atleast_2d(acc_scratch), np.atleast_2d(acc_arm)
  ok_s = curves.finished_seeds(diverged_scratch, len(a_s))
  ok_a = curves.finished_seeds(diverged_arm, len(a_a))
  it_s = curves.iterations_to_reach(steps, a_s, threshold)
  it_a = curves.iterations_to_reach(steps, a_a, threshold)
  budget = float(steps[-1])
  c_s, c_a = np.minimum(it_s, budget), np.minimum(it_a, budget)
  c_s, c_a = np.maximum(c_s, 1e-9), np.maximum(c_a, 1e-9)
  out = {"iterations": it_a, "iterations_scratch": it_s}
  if not ok_s.any() or not ok_a.any():
    which = "scratch" if not ok_s.any() else "arm"
    nan = float("nan")
    return {
      "gain": nan,
      "gain_censored": nan,
      "censored": "none",
      "gain_ci": [nan, nan],
      "gain_seed_std": nan,
      "gain_seeds": np.full(len(a_a), nan),
      **out,
      "reached": nan,
      "reached_scratch": nan,
      "auc_difference": nan,
      "error": f"{which}: " + curves.all_diverged(len(a_s) if which == "scratch" else len(a_a)),
    }
  cens_s, cens_a = ~np.isfinite(it_s[ok_s]), ~np.isfinite(it_a[ok_a])
  censored = {
    (False, False): "none",
    (False, True): "upper_bound",
    (True, False): "lower_bound",
    (True, True): "both",
  }[(bool(cens_s.any()), bool(cens_a.any()))]
  f_s, f_a = c_s[ok_s], c_a[ok_a]
  rng = np.random.default_rng(seed)
  bs = f_s[rng.integers(0, len(f_s), (n_boot, len(f_s)))].mean(1)
  ba = f_a[rng.integers(0, len(f_a), (n_boot, len(f_a)))].mean(1)
  ratio = bs / ba
  per_seed = f_s.mean() / c_a
  span = max(steps[-1] - steps[0], 1e-12)
  diff = a_a[ok_a].mean(0) - a_s[ok_s].mean(0)
  auc = float(np.sum((diff[1:] + diff[:-1]) / 2 * np.diff(steps)) / span) if len(steps) > 1 else 0.0
  return {
    "gain": curves.speedup(steps, a_s[ok_s], a_a[ok_a], threshold),
    "gain_censored": float(f_s.mean() / f_a.mean()),
    "censored": censored,
    "gain_ci": [float(np.percentile(ratio, 5)), float(np.percentile(ratio, 95))],
    "gain_seed_std": float(per_seed[ok_a].std()),
    "gain_seeds": per_seed,
    **out,
    "reached": float(np.mean(~cens_a)),
    "reached_scratch": float(np.mean(~cens_s)),
    "auc_difference": auc,
    "accuracy_behind_fraction": behind_fraction(steps, a_s[ok_s], a_a[ok_a]),
    "accuracy_behind_fraction_2se": behind_fraction(steps, a_s[ok_s], a_a[ok_a], z=2.0),
    "accuracy_ahead_fraction": behind_fraction(steps, a_a[ok_a], a_s[ok_s]),
  }


def behind_fraction(steps, acc_ref, acc_arm, z: float = 1.0) -> float:
  """Share of the logged steps after the first at which the arm's seed-mean accuracy is below the
  reference's by more than z standard errors of the difference of the two means.

  The two arms' seeds are independent draws (their heads and data orders differ), so the standard
  error is the unpaired one, sqrt(var_arm / n_arm + var_ref / n_ref) with ddof 1 (0 for one seed).
  "Slower than scratch over most of training" (the paper's Fig 1, right) reads as a value > 0.5.
  """
  a_r = np.atleast_2d(np.asarray(acc_ref, np.float64))
  a_a = np.atleast_2d(np.asarray(acc_arm, np.float64))
  var = lambda a: a.var(0, ddof=1) / len(a) if len(a) > 1 else np.zeros(a.shape[1])
  se = np.sqrt(var(a_r) + var(a_a))
  behind = (a_r.mean(0) - a_a.mean(0)) > z * se
  return float(behind[1:].mean()) if len(np.asarray(steps)) > 1 else 0.0


def activity_drop(steps, after, before, window: float) -> dict[str, Any]:
  """How far a layer's activity falls right after the switch (pass the finished seeds only).

  Args:
    steps: [T] downstream steps (0 = the switch).
    after: [S, T] the stat (e.g. active fraction) over the downstream run.
    before: [S] its value just before the switch.
    window: steps after the switch to look in.
  Returns before / after (the minimum over 0 < step <= window) / drop = before - after, seed means
  with drop_std, and relative_drop = drop / before.
  """
  steps, after, before = np.asarray(steps), np.atleast_2d(after), np.asarray(before, np.float64)
  mask = (steps > 0) & (steps <= window)
  if not mask.any():
    raise errors.ConfigError(
      f"no downstream eval step lies in (0, {window}]: the drop at the switch cannot be measured. "
      "Fix: lower downstream.eval_every_steps or raise downstream.drop_window."
    )
  low = np.nanmin(after[:, mask], axis=1)
  drop = before - low
  b = float(before.mean())
  return {
    "before": b,
    "after": float(low.mean()),
    "drop": float(drop.mean()),
    "drop_std": float(drop.std()),
    "relative_drop": float(drop.mean() / b) if b > 0 else 0.0,
  }


def validate(config) -> None:
  """The sweep config's consistency (one ConfigError line naming the field and the fix)."""
  sw, dn = config.sweep, config.downstream
  for field in ("widths", "learning_rates", "num_random_classes", "upstream_steps"):
    if not len(sw[field]):
      raise errors.ConfigError(f"config.sweep.{field} is empty. Fix: give at least one value.")
  every = int(config.upstream.eval_every_steps)
  if every < 1:
    raise errors.ConfigError("config.upstream.eval_every_steps must be >= 1. Fix: e.g. 50.")
  bad = [int(l) for l in sw.upstream_steps if int(l) < 1 or int(l) % every]
  if bad:
    raise errors.ConfigError(
      f"config.sweep.upstream_steps {bad} are not positive multiples of "
      f"config.upstream.eval_every_steps={every}, so activity is not measured at the switch. "
      "Fix: use multiples of it (or lower eval_every_steps)."
    )
  if not 0 < float(dn.threshold) <= 1:
    raise errors.ConfigError(f"config.downstream.threshold must be in (0, 1], got {dn.threshold}.")
  unknown = [a for a in config.arms if a not in ARMS]
  if unknown or not config.arms:
    raise errors.ConfigError(
      f"config.arms={tuple(config.arms)} must be a non-empty subset of "
      f"{ARMS}. Fix: e.g. --config.arms=pretrained."
    )
  if int(dn.eval_every_steps) < 1 or int(dn.num_steps) < int(dn.eval_every_steps):
    raise errors.ConfigError(
      "config.downstream needs 1 <= eval_every_steps <= num_steps. Fix: e.g. 5 and 400."
    )


def downstream_blocks(config) -> list[tuple[str, int | None, int | None]]:
  """Seed blocks of the downstream run, num_seeds seeds each: (arm, upstream length, K index);
  block 0 is the scratch baseline."""
  lengths = sorted(int(l) for l in config.sweep.upstream_steps)
  ks = range(len(config.sweep.num_random_classes))
  return [(SCRATCH, None, None)] + [(a, l, g) for a in config.arms for l in lengths for g in ks]


def block_init(block, snaps, init_snap, fresh):
  """Starting params of one downstream block (its seeds stacked): `fresh` (scratch), or the
  upstream snapshot of its length and K group `snaps` with fresh heads (`transfer_init`; the
  rescaled arm first rescales every tensor to its norm at the upstream init `init_snap`)."""
  arm = block[0]
  if arm == SCRATCH:
    return fresh
  return transfer_init(snaps, fresh, init_snap if arm == "rescaled" else None)


def point_activity(up_act, up_act0, d_act, d_scratch, d_steps, length: int, window: float):
  """One point's activity curves (global steps, seed means/stds) and its drops at the switch.

  up_act / d_act: upstream / downstream curves {layer: {"steps", stat: [S, T]}} of the point's
  seeds that entered the statistics (row j of one is the same seed as row j of the other; d_act
  starts at downstream step 0); up_act0: their upstream step-0 values {layer: {stat: [S]}};
  d_scratch: the downstream curves of the scratch seeds that finished.  Every one non-empty.
  """
  acts, drops = {}, {}
  for layer in d_act:
    keep = up_act[layer]["steps"] <= length
    curve = {"steps": np.concatenate([[0], up_act[layer]["steps"][keep], length + d_steps[1:]])}
    for stat in activity.STATS:
      full = np.concatenate(
        [up_act0[layer][stat][:, None], up_act[layer][stat][:, keep], d_act[layer][stat][:, 1:]],
        axis=1,
      )
      curve[stat], curve[stat + "_std"] = full.mean(0), full.std(0)
    acts[layer] = curve
    act, dead = d_act[layer]["active_fraction"], d_act[layer]["dead_fraction"]
    d = activity_drop(d_steps, act, act[:, 0], window)
    in_win = (d_steps > 0) & (d_steps <= window)
    d["dead_before"] = float(dead[:, 0].mean())
    d["dead_after"] = float(np.nanmax(dead[:, in_win], axis=1).mean())
    # Baselines: the same window for the scratch seeds, and the change over the last upstream
    # eval interval before the switch (a sharp drop starts from a flat upstream curve).
    sact = d_scratch[layer]["active_fraction"]
    base = activity_drop(d_steps, sact, sact[:, 0], window)
    d["scratch_before"], d["scratch_drop"] = base["before"], base["drop"]
    d["scratch_relative_drop"] = base["relative_drop"]
    ua = up_act[layer]["active_fraction"][:, keep]
    d["pre_switch_change"] = float((ua[:, -1] - ua[:, -2]).mean()) if ua.shape[1] > 1 else None
    drops[layer] = d
  return acts, drops


def rows(curves_: Mapping[str, Mapping[str, Any]], keep) -> dict[str, dict[str, Any]]:
  """Activity curves {layer: {"steps", stat: [S, T]}} (or start values {layer: {stat: [S]}})
  restricted to the seeds `keep` (a bool mask or index array)."""
  return {
    layer: {k: (v if k == "steps" else np.asarray(v)[keep]) for k, v in c.items()}
    for layer, c in curves_.items()
  }


def seed_summary(curve: Mapping[str, np.ndarray], seeds, steps) -> dict[str, Any]:
  """{"steps", stat: seed mean [T], stat_std: [T]} of activity curves over the index array seeds."""
  return {
    "steps": steps,
    **{s: curve[s][seeds].mean(0) for s in activity.STATS},
    **{s + "_std": curve[s][seeds].std(0) for s in activity.STATS},
  }


# ----------------------------------------------------------------------------------------------
# Summaries of a finished sweep.


def find_point(points: Mapping[str, Any], **coords) -> str | None:
  """The id of the point whose fields equal `coords` (None if none does)."""
  for pid, p in points.items():
    if all(
      p.get(k) == v or (isinstance(v, float) and np.isclose(p.get(k, np.nan), v))
      for k, v in coords.items()
    ):
      return pid
  return None


def highlights(config, points) -> dict[str, str | None]:
  """Ids of the configured negative-transfer point and its wide variant (config.highlight)."""
  h = config.get("highlight")
  if not h:
    return {}
  neg = dict(h.negative)
  wide = dict(neg, width=h.wide_width)
  return {"negative": find_point(points, **neg), "wide": find_point(points, **wide)}


def summary_table(out: Mapping[str, Any]) -> str:
  """One line per point: gain with its 5-95% bootstrap interval and the later layers' drop."""
  later = out.get("later_layers") or out["layers"]
  lines = [
    f"threshold {out['threshold']}, {out['num_seeds']} seeds per point; gain = scratch "
    "iterations / arm iterations ('<x': arm censored at the budget, so gain < x); "
    "drop = active fraction before -> min within the window after the switch"
  ]
  for pid, p in out["points"].items():
    if p.get("error"):
      lines.append(f"{pid:45s} gain {'div':>6s} | {p['error']}")
      continue
    lo, hi = p["gain_ci"]
    drops = " ".join(
      f"{l}:{p['activity_drop'][l]['before']:.2f}->{p['activity_drop'][l]['after']:.2f}"
      for l in later
    )
    up = p.get("upstream_train_accuracy")
    if up is not None:
      up = np.asarray(up, np.float64)[np.asarray(p.get("finished", [True] * len(up)), bool)]
    up = f"{np.mean(up):.2f}" if up is not None and len(up) else "nan"
    n_div = p.get("diverged", 0) + p.get("diverged_upstream", 0)
    lines.append(
      f"{pid:45s} gain {gain_text(p):>6s} [{lo:.2f}, {hi:.2f}] seed-sd "
      f"{p['gain_seed_std']:.2f} up-acc {up} | {drops}"
      + (f" ({n_div} seeds diverged)" if n_div else "")
    )
  return "\n".join(lines)


def gain_text(p) -> str:
  """A point's gain as text: the value, '<x' / '>x' for a censored bound, 'n/r' (neither arm
  reached the threshold in every seed), 'div' (no finished seeds)."""
  g = p["gain"]
  if p.get("error"):
    return "div"
  if g is None or not np.isfinite(g):
    if p["censored"] == "both":
      return "n/r"  # neither arm reached the threshold in every seed
    bound = {"upper_bound": "<", "lower_bound": ">"}[p["censored"]]
    return f"{bound}{p['gain_censored']:.2f}"
  return f"{g:.2f}"
