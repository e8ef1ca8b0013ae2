"""What every claim rule shares: verdicts, the power and regime gates, seed statistics with
Student-t intervals, the row a rule returns, and the registry of figures.

A verdict is one of VERDICTS, decided in this order (`judge`):

1. `NOT_EVALUABLE`: the run holds no usable seed for the claim (every seed diverged, an arm is
   missing);
2. `REGIME_NOT_REACHED`: the claim is about a regime the run did not reach: random-label claims need
   a net that fitted its random labels to at least `FIT_OVER_CHANCE` x chance train accuracy;
   negative transfer and section 3 need an upstream that memorised (train accuracy >= `MEMORISED`)
   with its later layers alive (fewer than `DEAD_MAX` of their units dead) before the switch;
3. `UNDERPOWERED`: fewer than `MIN_SEEDS` seeds enter the statistic, whatever its means say;
4. otherwise the rule's own tests: `REPRODUCED` (all hold), `PARTLY` (some), `NOT_REPRODUCED` (none).

Intervals are two-sided 95% Student-t intervals with n - 1 degrees of freedom over seeds (paired:
the per-seed differences of two arms whose seed i shares its data order), so "beyond zero" means
the interval excludes zero.

    from rl_align.claims import core
    d = core.paired(acc_cov, acc_scratch)      # {"mean", "lo", "hi", "se", "n", "diffs"}
    core.excludes_zero(d, sign=+1)             # the interval lies above 0
    core.judge([test1, test2], n=d["n"], gate=core.fit_gate(train_acc, num_classes=10))
"""

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats

from rl_align import errors

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"
UNDERPOWERED, REGIME_NOT_REACHED, NOT_EVALUABLE = (
  "underpowered",
  "not evaluable: regime not reached",
  "not evaluable",
)
DESCRIBED = "described"  # descriptive rows and diagnostics: shown, outside the tally
VERDICTS = (
  REPRODUCED,
  PARTLY,
  NOT_REPRODUCED,
  UNDERPOWERED,
  REGIME_NOT_REACHED,
  NOT_EVALUABLE,
  DESCRIBED,
)

MIN_SEEDS = 8  # a verdict rests on at least this many seeds per arm
CONFIDENCE = 0.95  # two-sided Student-t intervals
FIT_OVER_CHANCE = 2.0  # random labels fitted: train accuracy >= 2 x chance (1 / K)
MEMORISED = 0.9  # negative transfer / section 3: the upstream memorised its labels
DEAD_MAX = 0.5  # later layers alive before the switch: < half of their units dead

# Sections of the table: claims enter the verdict tally; descriptive rows and diagnostics do not.
CLAIMS, DESCRIPTIVE, DIAGNOSTICS = "claims", "descriptive", "diagnostics"


class ReportError(errors.RLAlignError):
  """A run the report cannot judge (unknown figure, missing field); the message says the fix."""


# ----------------------------------------------------------------------------------------------
# Statistics over seeds.


def t_critical(n: int, confidence: float = CONFIDENCE) -> float:
  """The two-sided Student-t critical value for n seeds (n - 1 degrees of freedom); nan if n < 2."""
  return float(sp_stats.t.ppf(0.5 + confidence / 2, n - 1)) if n >= 2 else float("nan")


def interval(x, confidence: float = CONFIDENCE) -> dict[str, Any]:
  """Mean, std (ddof 1), SE, the t interval [lo, hi] and n of the finite values of x."""
  x = np.asarray(x, np.float64).reshape(-1)
  x = x[np.isfinite(x)]
  n = len(x)
  mean = float(x.mean()) if n else float("nan")
  std = float(x.std(ddof=1)) if n > 1 else float("nan")
  se = std / np.sqrt(n) if n > 1 else float("nan")
  half = t_critical(n, confidence) * se
  return {"mean": mean, "std": std, "se": se, "lo": mean - half, "hi": mean + half, "n": n}


def paired(a, b, ok=None) -> dict[str, Any]:
  """`interval` of the per-seed differences a - b (seed i with seed i) over the seeds where `ok`
  (default: all; non-finite pairs are dropped), plus the differences themselves."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n = min(len(a), len(b))
  keep = np.ones(n, bool) if ok is None else np.asarray(ok, bool)[:n].copy()
  d = a[:n][keep] - b[:n][keep]
  return {**interval(d), "diffs": d}


def welch(a, b, confidence: float = CONFIDENCE) -> dict[str, Any]:
  """mean(a) - mean(b) of two independent seed samples with Welch's t interval; n = min size."""
  a = np.asarray(a, np.float64)[np.isfinite(a)]
  b = np.asarray(b, np.float64)[np.isfinite(b)]
  n = min(len(a), len(b))
  if n < 2:
    return {
      "mean": float("nan"),
      "se": float("nan"),
      "lo": float("nan"),
      "hi": float("nan"),
      "n": n,
    }
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = float(np.sqrt(va + vb))
  dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else n - 1
  half = float(sp_stats.t.ppf(0.5 + confidence / 2, dof)) * se
  mean = float(a.mean() - b.mean())
  return {"mean": mean, "se": se, "lo": mean - half, "hi": mean + half, "n": n}


def excludes_zero(stat: Mapping[str, Any], sign: float = 1.0) -> bool:
  """True when the interval lies strictly on the `sign` side of zero (False if undefined)."""
  lo, hi = float(stat["lo"]), float(stat["hi"])
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return False
  return lo > 0 if sign > 0 else hi < 0


def ratio_interval(
  num, den, n_boot: int = 4000, seed: int = 0, confidence: float = CONFIDENCE
) -> dict[str, Any]:
  """mean(num) / mean(den) over paired seeds, with a percentile bootstrap interval (seeds
  resampled with replacement, num and den together).  num, den: [S] per-seed values."""
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  keep = np.isfinite(num) & np.isfinite(den)
  num, den = num[keep], den[keep]
  n = len(num)
  if n < 2 or den.mean() == 0:
    return {"ratio": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": n}
  idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
  with np.errstate(divide="ignore", invalid="ignore"):
    boot = num[idx].mean(1) / den[idx].mean(1)
  q = (1 - confidence) / 2
  lo, hi = np.nanquantile(boot, [q, 1 - q])
  return {"ratio": float(num.mean() / den.mean()), "lo": float(lo), "hi": float(hi), "n": n}


# ----------------------------------------------------------------------------------------------
# Gates.


@dataclasses.dataclass(frozen=True)
class Gate:
  """A regime gate: which seeds reached the regime, and the text the row shows."""

  ok: np.ndarray  # [S] bool: the seeds in the regime
  text: str  # e.g. "random-label fit 0.41 (≥ 0.20: 8/8 seeds)"
  any_finished: bool = True  # False: no seed finished at all (not evaluable, not a regime)

  @property
  def reached(self) -> bool:
    return bool(np.any(self.ok))


def open_gate(n: int, text: str = "none (not a random-label claim)") -> Gate:
  """The gate of a claim without a regime condition: every seed."""
  return Gate(np.ones(n, bool), text)


def fit_gate(train_accuracy, num_classes: int, finished=None) -> Gate:
  """Random labels fitted: per-seed train accuracy >= FIT_OVER_CHANCE / K (finished seeds only)."""
  acc = np.asarray(train_accuracy if train_accuracy is not None else [], np.float64).reshape(-1)
  fin = np.ones(len(acc), bool) if finished is None else np.asarray(finished, bool)[: len(acc)]
  need = FIT_OVER_CHANCE / int(num_classes)
  ok = fin & np.isfinite(acc) & (acc >= need)
  mean = float(np.mean(acc[fin])) if fin.any() else float("nan")
  return Gate(
    ok,
    f"random-label fit {fmt(mean)} (≥ {fmt(need, 2)} = {FIT_OVER_CHANCE:g}x chance:"
    f" {int(ok.sum())}/{len(acc)} seeds)",
    bool(fin.any()),
  )


def memorised_gate(upstream_fit, dead_before: Mapping[str, Any] | None, finished=None) -> Gate:
  """Upstream memorised (train accuracy >= MEMORISED) with every later layer alive before the
  switch (dead fraction < DEAD_MAX).  upstream_fit [S]; dead_before {layer: [S] or scalar}."""
  fit = np.asarray(upstream_fit if upstream_fit is not None else [], np.float64).reshape(-1)
  fin = np.ones(len(fit), bool) if finished is None else np.asarray(finished, bool)[: len(fit)]
  ok = fin & np.isfinite(fit) & (fit >= MEMORISED)
  dead_text = "later-layer activity not recorded"
  if dead_before:
    worst = np.zeros(len(fit))
    for v in dead_before.values():
      worst = np.maximum(worst, np.broadcast_to(np.asarray(v, np.float64), (len(fit),)))
    ok &= worst < DEAD_MAX
    dead_text = f"most dead later layer {fmt(float(np.mean(worst)), 2)} (< {DEAD_MAX:g})"
  else:
    ok &= False
  mean = float(np.mean(fit)) if len(fit) else float("nan")
  return Gate(
    ok,
    f"upstream fit {fmt(mean)} (≥ {MEMORISED:g}), {dead_text}: {int(ok.sum())}/{len(fit)} seeds",
    bool(fin.any()),
  )


# ----------------------------------------------------------------------------------------------
# Verdicts and rows.


def count_verdict(hits: int, total: int) -> str:
  """reproduced if every one of `total` tests holds, partly if some, not reproduced if none."""
  return REPRODUCED if hits == total else (PARTLY if hits else NOT_REPRODUCED)


def judge(
  tests: Sequence[bool], *, n: int, gate: Gate | None = None, evaluable: bool = True
) -> str:
  """The verdict of a rule's tests on n seeds behind its regime gate (module docstring order)."""
  if not evaluable or not tests or (gate is not None and not gate.any_finished):
    return NOT_EVALUABLE
  if gate is not None and not gate.reached:
    return REGIME_NOT_REACHED
  if n < MIN_SEEDS:
    return UNDERPOWERED
  return count_verdict(int(sum(bool(t) for t in tests)), len(tests))


@dataclasses.dataclass
class Row:
  """One row of the claims table."""

  id: str  # stable key, e.g. "fig5.covariance_faster"
  figure: str  # "Fig 5"
  claim: str
  paper: str
  ours: str
  rule: str
  verdict: str
  n: int | None = None  # seeds the verdict rests on
  gate: str = ""  # the regime gate's measured value
  plot: str | None = None
  section: str = CLAIMS
  run: str = ""

  def __post_init__(self):
    if self.verdict not in VERDICTS:
      raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


def fmt(x, digits: int = 3) -> str:
  """A number for the table (nan / None as 'n/a'; large or tiny values in %g)."""
  if x is None or not np.isfinite(x):
    return "n/a"
  x = float(x)
  return f"{x:.{digits}g}" if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3) else f"{x:.{digits}f}"


def ci(stat: Mapping[str, Any]) -> str:
  """'mean [lo, hi] (n=..)' of an `interval` / `paired` / `welch` result."""
  return f"{fmt(stat['mean'])} [{fmt(stat['lo'])}, {fmt(stat['hi'])}] (n={stat['n']})"


def need(d: Mapping[str, Any] | None, keys: Sequence[str], where: str) -> Mapping[str, Any]:
  """d itself when it has every key; a ReportError naming the missing ones otherwise."""
  missing = [k for k in keys if d is None or k not in d]
  if missing:
    raise ReportError(
      f"{where} lacks {missing}. Fix: rerun the binary on that workdir (it resumes "
      "and rewrites results.json), or pass a workdir of a finished run."
    )
  return d


def arr(d: Mapping[str, Any], key: str, dtype=np.float64) -> np.ndarray:
  """d[key] as a flat array (empty when absent or None)."""
  v = d.get(key)
  return np.asarray([] if v is None else v, dtype).reshape(-1)


def finished(res: Mapping[str, Any], n: int) -> np.ndarray:
  """[n] bool: the seeds of a results dict that did not diverge."""
  div = res.get("diverged")
  return np.ones(n, bool) if div is None else ~np.asarray(div, bool).reshape(-1)[:n]


# ----------------------------------------------------------------------------------------------
# The registry: figure key -> the function that makes its rows from a run.

_FIGURES: dict[str, tuple[str, Callable[[Mapping[str, Any]], list[Row]]]] = {}


def figure(key: str, title: str):
  """Decorator: registers `rows(run) -> [Row]` as the claims of figure `key` (titled `title`)."""

  def deco(fn):
    _FIGURES[key] = (title, fn)
    return fn

  return deco


def figures() -> dict[str, str]:
  """Registered figure keys -> titles."""
  return {k: t for k, (t, _) in _FIGURES.items()}


def rows_of(key: str) -> Callable[[Mapping[str, Any]], list[Row]]:
  """The rows function of a figure key; a ReportError naming the known keys otherwise."""
  if key not in _FIGURES:
    raise ReportError(
      f"no claims are registered for figure {key!r}. Fix: one of "
      f"{sorted(_FIGURES)} (config.claims.figure)."
    )
  return _FIGURES[key][1]
