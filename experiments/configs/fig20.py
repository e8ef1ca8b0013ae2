"""Fig 20 (and Fig 4 left): the eigenvalue map f on synthetic Gaussian data, dense nets.

Command (the README's main job, all three panels, 5 seeds each, the paper's sizes):
  python -m experiments.eigenvalue_map --config=experiments/configs/fig20.py:all --workdir=workdirs/fig20
One panel:      --config=experiments/configs/fig20.py:right
Other reading of the settings table's "diag(0.1..3.0)" as variances: fig20.py:all,variance
Tiny smoke run: fig20.py:right,tiny   (CI)
Arguments (comma separated): panels left, middle, right or all (default all; several allowed);
std | variance (reading=...; default std); tiny.  Anything else is an error.
Expected runtime of `all`: measured 5m07s (left 2.4 min, middle 2.5, right 8 s) on a 2-core Intel
Xeon (developers' machine, idle, 2026-11-27; fp32 matmul peak not recorded in that run); 33 min on
the same machine shared with three other heavy jobs; 13.5-14.5 min of training on a 2-core AMD EPYC
(fp32 matmul 150 GFLOP/s in JAX).  Each run now writes WORKDIR/run.json with the machine's CPU,
cores and measured fp32 matmul peak: quote runtimes with it.
Expected result (the paper's Fig 20, and the README results table): right rises from
1/sqrt(30)=0.183 to a plateau near 0.25 for sigma >= 2; middle rises to a peak then falls; left
decreases from ~0.38 to ~0.32.
Data: embedded synthetic x ~ N(0, diag(sigma^2)), random labels (K=10), one draw per seed.
"""

import ml_collections

from experiments.configs import common
from rl_align.claims import paper

_SIGMA_WIDE = tuple(round(0.1 * i, 1) for i in range(1, 31))
_SIGMA_LEFT = tuple(round(1.0 + 0.1 * i, 1) for i in range(10))

# Values read off the paper's Fig 20 (appendix, fully connected nets on Gaussian data), marked on
# our plots (rl_align.claims.paper holds the paper's numbers).
PAPER_REFERENCE = paper.FIG20
_PANELS = {  # d, widths, n, sigmas (paper's Fig 20 settings table)
  "left": (10, (2048, 256), 10_000, _SIGMA_LEFT),
  "middle": (30, (2048, 256), 10_000, _SIGMA_WIDE),
  "right": (30, (256, 256), 2_000, _SIGMA_WIDE),
}


def panel(name: str, reading: str, tiny: bool) -> ml_collections.ConfigDict:
  _, widths, n, sig = _PANELS[name]
  p = ml_collections.ConfigDict()
  key = "stds" if reading == "std" else "variances"  # the same numbers, read as stds or variances
  p.data = {"kwargs": {"n": 512 if tiny else n, key: sig, "seed": 0, "num_classes": 10}}
  p.model = {"widths": (64, 32) if tiny else widths}
  if not tiny:  # train accuracy (a forward pass over 2048 examples) every 10 epochs, not every
    # epoch: 5% of the main job's time (benchmarks/main_job.py); loss and batch accuracy are
    # still logged every epoch, and the final train accuracy (results.json) is always measured.
    p.train = {"eval_every_steps": 10 * (n // 128)}
  p.title = f"Fig 20 {name} ({reading} reading)"
  p.paper_reference = PAPER_REFERENCE[name] if reading == "std" else None
  return p


@common.with_download
def get_config(arg: str = "all") -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    panels=common.AnyOf(*_PANELS, aliases={"all": tuple(_PANELS)}),
    reading=common.OneOf("std", "variance"),
    tiny=False,
  )
  reading, tiny, names = a.reading, a.tiny, a.panels
  c = common.base_config()
  c.figure_name = "fig20.png"
  c.claims.figure = "fig20"
  c.labels = "random"
  c.num_classes = 10
  c.data.name = "gaussian"
  c.model = {
    "name": "dense",
    "widths": (2048, 256),
    "num_classes": 10,
    "kernel_init": "lecun_normal",
    "dtype": "float32",
  }
  t = c.train
  # The paper does not state its optimizer.  lr 0.02 is the best of the sweep in the README
  # ("Fig 20 optimizer search"): it matches all three panels' magnitudes; lr 0.01 undershoots.
  t.optimizer, t.learning_rate, t.momentum, t.batch_size = "momentum", 0.02, 0.9, 128
  t.num_epochs = 2 if tiny else 200
  t.num_seeds = 2 if tiny else 5
  t.snapshot_epochs = (0, 1, 2) if tiny else (0, 1, 2, 5, 10, 20, 50, 100, 200)
  t.log_every_steps = 0
  c.analysis = {
    "centered": False,
    "reduce": "sum",
    "basis_seed": 0,
    "patch_size": 3,
    "population_covariance": True,
  }
  c.panels = {name: panel(name, reading, tiny) for name in names}
  return c
