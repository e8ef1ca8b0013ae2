"""Claims of the filters runs: Fig 3, the filters' covariance eigenvectors are the data's patch PCs.

The paper's claim is order-free: Sigma_w = g(Sigma_x) with g not monotone (f falls at the largest
eigenvalue, Fig 4), so eigenvectors are compared as a basis and as groups of near-degenerate PCs,
not in rank order (the rank-order overlaps stay in the row as description).
"""

from typing import Any, Mapping

import numpy as np

from rl_align.claims import core


def fig3_row(run: Mapping[str, Any]) -> core.Row:
  """Fig 3 (section 2.2), on Sigma_w pooled over the seeds that fitted their random labels
  (`rl_align.filters.alignment_tests`): (i) aligned: Sigma_w's misalignment in the patch
  eigenbasis is below the 2.5% quantile of its misalignment in Haar-random bases; (ii) the top-k
  eigenvectors of Sigma_w lie inside groups of near-degenerate patch PCs: their mean largest
  group projection energy exceeds the 95% quantile of k random directions'."""
  res, cfg = run.get("results") or {}, run.get("config") or {}
  claim = "the filter covariance's eigenvectors are the patch PCs (up to degenerate mixing)"
  paper_text = "top filter eigenvectors look like the top patch PCs (qualitative)"
  rule = (
    "reproduced if both: (i) misalignment in the patch eigenbasis < 2.5% quantile of "
    "random bases', (ii) top-k filter eigenvectors' mean projection energy onto one group "
    "of near-degenerate patch PCs > 95% quantile of random directions'; partly if one; not "
    "reproduced if none"
  )
  gate = core.fit_gate(
    res.get("train_accuracy"),
    int(cfg.get("num_classes", 10)),
    core.finished(res, len(core.arr(res, "train_accuracy"))),
  )
  if res.get("error") or "alignment_tests" not in res:
    return core.Row(
      "fig3",
      "Fig 3",
      claim,
      paper_text,
      res.get("error")
      or "results.json has no "
      "alignment_tests (an older run). Fix: rerun the binary on the workdir.",
      rule,
      core.NOT_EVALUABLE,
      gate=gate.text,
      plot=res.get("figure"),
    )
  t = res["alignment_tests"]
  rb, ge = t["misalignment_random_bases"], t["group_energy_chance"]
  tests = [t["misalignment_eigenbasis"] < rb["q025"], t["group_energy"] > ge["q95"]]
  n = int(res.get("num_seeds_pooled", gate.ok.sum()))
  ks = sorted(res.get("subspace_overlap", {}), key=int)
  rank = "; ".join(
    f"top-{k} {core.fmt(res['subspace_overlap'][k])} vs chance "
    f"{core.fmt(res['random_baseline'][k][0])}"
    for k in ks
  )
  ours = (
    f"misalignment in the patch eigenbasis {core.fmt(t['misalignment_eigenbasis'])} vs "
    f"random bases {core.fmt(rb['mean'])} ± {core.fmt(rb['std'])} std (2.5% quantile "
    f"{core.fmt(rb['q025'])}), finite-sample floor {core.fmt(t['misalignment_floor']['mean'])}"
    f"; top-{t['k']} group energy {core.fmt(t['group_energy'])} vs chance "
    f"{core.fmt(ge['mean'])} (95% quantile {core.fmt(ge['q95'])}); Σ_w of "
    f"{res.get('num_filters_pooled', '?')} filters of {n} seeds; rank order (descriptive): "
    f"{rank}"
  )
  return core.Row(
    "fig3",
    "Fig 3",
    claim,
    paper_text,
    ours,
    rule,
    core.judge(tests, n=n, gate=gate),
    n=n,
    gate=gate.text,
    plot=res.get("figure"),
  )


@core.figure("fig3", "Fig 3")
def fig3(run: Mapping[str, Any]) -> list[core.Row]:
  return [fig3_row(run)]


def pooled_seeds(train_accuracy, num_classes: int, diverged) -> np.ndarray:
  """[S] bool: the seeds whose filters Fig 3 pools: those that fitted their random labels (the
  claim's regime), or every finished seed when none did (the row then says so)."""
  fin = ~np.asarray(diverged, bool)
  gate = core.fit_gate(train_accuracy, num_classes, fin)
  return gate.ok if gate.reached else fin
