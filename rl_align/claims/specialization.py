"""Claims of the specialization sweeps: section 3 (activity drop at the switch, widening) and the
Fig 1 search over learning rate, K and upstream length (results.json `points`, one per (width, lr,
K, L, arm); `rl_align.runners.specialization`).

Every point is judged only in the regime the claim is about: the upstream memorised its random
labels (fit >= `core.MEMORISED`) with its later layers alive before the switch (`core.memorised_gate`;
positive transfer: fitted, `core.fit_gate`).  Arms and scratch have independent seeds in a sweep,
so a point's transfer is the whole-curve difference of the seed means with Welch's t interval;
searching over P points, the interval is Bonferroni-corrected (confidence 1 - 0.05 / P).
"""

from typing import Any, Mapping, Sequence

import numpy as np

from rl_align.claims import core


def _rows_of(point: Mapping[str, Any], name: str) -> np.ndarray:
  a = point.get(name)
  return np.atleast_2d(np.asarray(a if a is not None else [[]], np.float64))


def point_gate(point: Mapping[str, Any], later: Sequence[str], memorised: bool) -> core.Gate:
  """The seeds of a point in the claim's regime (`later`: the later layers)."""
  fit = point.get("upstream_train_accuracy")
  fin = point.get("finished")
  if memorised:
    drops = point.get("activity_drop") or {}
    dead = {l: drops[l]["dead_before"] for l in later if l in drops}
    return core.memorised_gate(fit, dead, fin)
  return core.fit_gate(fit, int(point.get("num_random_classes", 10)), fin)


def transfer(
  point: Mapping[str, Any], gate: core.Gate, confidence: float = core.CONFIDENCE
) -> dict[str, Any]:
  """Welch interval of the whole-curve difference (arm seeds in the regime vs scratch seeds):
  the per-seed mean accuracy over the logged downstream steps after 0."""
  steps = np.asarray(point.get("downstream_steps", []), np.float64)
  arm, ref = _rows_of(point, "accuracy_seeds"), _rows_of(point, "accuracy_scratch_seeds")
  if not arm.size or not ref.size or not steps.size:
    return {
      "mean": float("nan"),
      "lo": float("nan"),
      "hi": float("nan"),
      "se": float("nan"),
      "n": 0,
    }
  fin = np.asarray(point.get("finished", np.ones(len(gate.ok), bool)), bool)
  mine = gate.ok[fin][: len(arm)]
  later = steps > 0
  return core.welch(arm[mine][:, later].mean(1), ref[:, later].mean(1), confidence)


def gated_points(res: Mapping[str, Any], memorised: bool) -> dict[str, tuple[dict, core.Gate]]:
  """{point id: (point, gate)} of the points without an error."""
  later = res.get("later_layers") or res.get("layers") or []
  return {
    pid: (p, point_gate(p, later, memorised))
    for pid, p in res["points"].items()
    if not p.get("error")
  }


def in_regime(pts: Mapping[str, tuple[dict, core.Gate]]) -> list[str]:
  """The points with at least 2 seeds in the regime: those a Welch interval can test, so those
  a search is corrected for (a point with one seed in the regime is no comparison)."""
  return [pid for pid, (_, g) in pts.items() if int(np.sum(g.ok)) >= 2]


def negative_points(res: Mapping[str, Any]) -> tuple[list[str], dict]:
  """The memorised points that transfer negatively (Bonferroni-corrected Welch interval below 0),
  and every point's (point, gate)."""
  pts = gated_points(res, memorised=True)
  reached = in_regime(pts)
  conf = 1 - (1 - core.CONFIDENCE) / max(len(reached), 1)
  neg = [pid for pid in reached if core.excludes_zero(transfer(pts[pid][0], pts[pid][1], conf), -1)]
  return neg, pts


def _best_fit(pts) -> str:
  fits = [
    float(np.mean(f))
    for f in (core.arr(p, "upstream_train_accuracy") for p, _ in pts.values())
    if f.size
  ]
  return core.fmt(max(fits)) if fits else "n/a"


def search_row(res: Mapping[str, Any], plot: str | None, direction: str) -> core.Row:
  """Fig 1 (left: positive, right: negative transfer), searched with a sweep of VGG16 over lr, K
  random classes and upstream length L: is there a point in the regime whose whole-curve
  difference (arm - scratch) is on the claimed side of 0, with the interval corrected for the
  number of points searched?  Reproduced if some point's corrected interval is; partly if some
  point's uncorrected 95% interval is; not reproduced if none."""
  sign = 1.0 if direction == "positive" else -1.0
  pts = gated_points(res, memorised=direction == "negative")
  reached = {pid: pts[pid] for pid in in_regime(pts)}
  conf = 1 - (1 - core.CONFIDENCE) / max(len(reached), 1)
  plain = {pid: transfer(p, g) for pid, (p, g) in reached.items()}
  corr = {pid: transfer(p, g, conf) for pid, (p, g) in reached.items()}
  best = max(
    plain, key=lambda k: sign * plain[k]["mean"] / max(plain[k]["se"], 1e-12), default=None
  )
  word = "slower" if direction == "negative" else "faster"
  claim = (
    f"{direction} transfer: pretrained trains {word} than scratch over most of downstream "
    "training, at some lr / K / upstream length"
  )
  rule = (
    f"over the P points in the regime: some point's whole-curve arm−scratch Welch interval "
    f"at confidence 1 − 0.05/P {'below' if sign < 0 else 'above'} 0: reproduced; only at "
    "95%: partly; at none: not reproduced"
  )
  n_all = len(pts)
  gate_text = (
    f"{len(reached)}/{n_all} points in the regime "
    f"({'memorised, later layers alive' if sign < 0 else 'fitted'}; best upstream fit "
    f"{_best_fit(pts)})"
  )
  if best is None:
    return core.Row(
      f"fig1_search.{direction}",
      "Fig 1 search",
      claim,
      f"{word} than scratch (qualitative)",
      "no point in the regime",
      rule,
      core.REGIME_NOT_REACHED if pts else core.NOT_EVALUABLE,
      n=0,
      gate=gate_text,
      plot=plot,
    )
  hits_c = [pid for pid in reached if core.excludes_zero(corr[pid], sign)]
  hits_p = [pid for pid in reached if core.excludes_zero(plain[pid], sign)]
  shown = (hits_c or hits_p or [best])[0]
  ours = (
    f"{len(hits_c)} point(s) beyond the corrected interval, {len(hits_p)} beyond 95%, of "
    f"{len(reached)}; {shown}: whole curve {core.ci(plain[shown])}"
  )
  n = plain[shown]["n"]
  return core.Row(
    f"fig1_search.{direction}",
    "Fig 1 search",
    claim,
    f"{word} than scratch over "
    f"most of training (Fig 1 {'right' if sign < 0 else 'left'}, qualitative)",
    ours,
    rule,
    core.judge([bool(hits_c), bool(hits_p)], n=n, gate=reached[shown][1]),
    n=n,
    gate=gate_text,
    plot=plot,
  )


def dropped(point: Mapping[str, Any], layers: Sequence[str]) -> list[bool]:
  """Per later layer: does the active fraction drop at the switch beyond the scratch seeds' drop in
  the same window?  Per-seed drops (`drop_seeds`, `scratch_drop_seeds`): paired t interval above
  0; else the arm seeds' drops against the scratch mean (one-sample t, SE = drop_std / sqrt(n - 1)
  from the population std)."""
  n = int(core.arr(point, "finished", bool).sum())
  out = []
  for layer in layers:
    d = (point.get("activity_drop") or {}).get(layer)
    if d is None or n < 2:
      out.append(False)
    elif "drop_seeds" in d and "scratch_drop_seeds" in d:
      out.append(core.excludes_zero(core.paired(d["drop_seeds"], d["scratch_drop_seeds"])))
    else:
      half = core.t_critical(n) * float(d["drop_std"]) / np.sqrt(n - 1)
      out.append(float(d["drop"]) - float(d["scratch_drop"]) - half > 0)
  return out


def drop_row(res: Mapping[str, Any], plot: str | None, figure: str = "§3") -> core.Row:
  """Section 3: in negative-transfer settings the later layers' ReLU activity drops at the
  upstream -> downstream switch.  Over the memorised points that transfer negatively: reproduced
  if at every one each later layer drops beyond scratch (`dropped`); partly if at some; not
  reproduced if at none; without a memorised point: regime not reached; with memorised points but
  no negative one: not evaluable."""
  layers = res.get("later_layers") or res.get("layers") or []
  neg, pts = negative_points(res)
  reached = in_regime(pts)
  claim = "later-layer ReLU activity drops at the switch in negative-transfer settings"
  paper_text = "sharp drop of later-layer activity at the switch (qualitative)"
  rule = (
    "over the memorised points that transfer negatively (Bonferroni-corrected Welch "
    "interval below 0): every later layer's drop − scratch drop, t interval above 0: at all "
    "points reproduced; at some partly; at none not reproduced"
  )
  gate_text = (
    f"{len(reached)}/{len(pts)} points memorised with later layers alive in ≥ 2 seeds "
    f"(best upstream fit {_best_fit(pts)})"
  )
  if not neg:
    verdict = core.REGIME_NOT_REACHED if not reached else core.NOT_EVALUABLE
    why = "no memorised point" if not reached else "no memorised point transfers negatively"
    return core.Row(
      f"{figure}.drop",
      figure,
      claim,
      paper_text,
      why,
      rule,
      verdict,
      n=0,
      gate=gate_text,
      plot=plot,
    )
  hits = [all(dropped(pts[p][0], layers)) for p in neg]
  p0 = pts[neg[0]][0]
  ad = p0.get("activity_drop") or {}
  ours = (
    f"{sum(hits)}/{len(neg)} negative points drop in every later layer {list(layers)}; "
    f"{neg[0]}: "
    + ", ".join(
      f"{l} {core.fmt(ad[l]['before'], 2)}→{core.fmt(ad[l]['after'], 2)} (scratch drop "
      f"{core.fmt(ad[l]['scratch_drop'], 2)})"
      for l in layers
      if l in ad
    )
  )
  n = min(int(core.arr(pts[p][0], "finished", bool).sum()) for p in neg)
  return core.Row(
    f"{figure}.drop",
    figure,
    claim,
    paper_text,
    ours,
    rule,
    core.judge(hits, n=n),
    n=n,
    gate=gate_text,
    plot=plot,
  )


def widening_row(res: Mapping[str, Any], plot: str | None) -> core.Row:
  """Section 3: widening the later layers restores positive transfer.  For every memorised
  negative point, the point with the same lr, K, upstream length and arm at the sweep's largest
  width: its whole-curve Welch interval (arm - scratch, the scratch seeds of that width) above 0.
  Reproduced at all, partly at some, not reproduced at none."""
  neg, pts = negative_points(res)
  points = res["points"]
  widest = max(p["width"] for p in points.values())
  key = lambda p: (p["learning_rate"], p["num_random_classes"], p["upstream_steps"], p["arm"])
  wide = {key(p): pid for pid, p in points.items() if p["width"] == widest and not p.get("error")}
  claim = "widening the later layers restores positive transfer"
  paper_text = "wider later layers: positive transfer again (qualitative)"
  rule = (
    "for each memorised negative point, its widest variant's whole-curve arm−scratch Welch "
    "interval above 0: at all reproduced; at some partly; at none not reproduced"
  )
  reached = in_regime(pts)
  gate_text = f"{len(reached)}/{len(pts)} points memorised with later layers alive in ≥ 2 seeds"
  pairs = [(pid, wide.get(key(points[pid]))) for pid in neg]
  pairs = [(a, b) for a, b in pairs if b is not None and b != a]
  if not pairs:
    why = (
      "no memorised point"
      if not reached
      else "no memorised negative point"
      if not neg
      else f"no wider variant of the negative points (widths up to {widest})"
    )
    return core.Row(
      "§3.widening",
      "§3",
      claim,
      paper_text,
      why,
      rule,
      core.REGIME_NOT_REACHED if not reached else core.NOT_EVALUABLE,
      n=0,
      gate=gate_text,
      plot=plot,
    )
  stats = [
    transfer(points[b], core.open_gate(len(core.arr(points[b], "finished", bool))))
    for _, b in pairs
  ]
  hits = [core.excludes_zero(s) for s in stats]
  ours = f"{sum(hits)}/{len(pairs)} negative points positive at width {widest}; " + "; ".join(
    f"{b}: {core.ci(s)}" for (_, b), s in zip(pairs, stats)
  )
  n = min(s["n"] for s in stats)
  return core.Row(
    "§3.widening",
    "§3",
    claim,
    paper_text,
    ours,
    rule,
    core.judge(hits, n=n),
    n=n,
    gate=gate_text,
    plot=plot,
  )


def _plots(res: Mapping[str, Any]) -> tuple[str | None, str | None]:
  figs = [str(f).rsplit("/", 1)[-1] for f in res.get("figures") or []]
  return (
    next((f for f in figs if "activity" in f), None),
    next((f for f in figs if "gain" in f), None),
  )


@core.figure("specialization", "§3")
def section3(run: Mapping[str, Any]) -> list[core.Row]:
  res = core.need(run.get("results"), ("points",), "results.json")
  act, gain = _plots(res)
  return [drop_row(res, act), widening_row(res, gain)]


@core.figure("fig1_search", "Fig 1 search")
def fig1_search(run: Mapping[str, Any]) -> list[core.Row]:
  res = core.need(run.get("results"), ("points",), "results.json")
  act, gain = _plots(res)
  rows = [
    search_row(res, gain, "positive"),
    search_row(res, gain, "negative"),
    drop_row(res, act, "Fig 1 search"),
  ]
  widths = {p["width"] for p in res["points"].values()}
  return rows + ([widening_row(res, gain)] if len(widths) > 1 else [])
