r"""Fig 5: random-label pretraining transfers, and the first layer's covariance carries the transfer.

Commands:
  local (embedded `photos`, upstream included; measured 7m22s on a 2-core Intel Xeon (developers'
  machine, idle, 2026-11-27; fp32 matmul peak not recorded in that run)):
    python -m experiments.transfer --config=experiments/configs/fig5.py:local --workdir=/tmp/fig5_local
  paper scale (tfds cifar10 prepared in $TFDS_DATA_DIR, one GPU; not run yet, guessed at ~1 h):
    python -m experiments.transfer --config=experiments/configs/fig5.py --workdir=workdirs/fig5
  tiny smoke run (CI):  fig5.py:tiny
  Arguments (comma separated): paper | local | tiny (scale=...; default paper); `all_layers` carries
  every layer but the head in the pretrained arms (default: the first layer only, see below);
  `random` uses fresh random downstream labels instead of the real ones.  Anything else is an error.
  [D] below marks our default where the paper is silent.

Model: the Fig 2 CNN (models.PaperCNN): conv F 3x3 VALID -> ReLU -> flatten -> dense 64 -> ReLU ->
dense 10; LeCun-normal init, SGD momentum 0.9, lr 0.01, batch 256 (paper scale).

Arms (rl_align/transfer.py): scratch, pretrained (weight-scaling control: rescaled to init norm),
pretrained_no_rescaling, covariance (first layer ~ N(0, Sigma_w) of the pretrained filters pooled over
seeds), covariance_L2 / covariance_L3 (section 2.5: dense_0, then the head, drawn from f_l measured on
the pretrained net and the new net's input covariance), pca_whitening and f_only (peers).
`transfer_layers = 1`: the pretrained arms carry the FIRST layer only (the rest fresh), so that
pretrained and covariance differ only in how the first layer is obtained; that is our reading of
Fig 5 (the figure is about the first layer), marked [D].  `all_layers` carries conv_0 and dense_0.
`rescale_sampled = True` [D]: the sampled layers get their init L2 norm, like `pretrained`.

Paper (Fig 5, CIFAR10, 20k upstream / 25k downstream): train accuracy at 1000 iterations
0.78 / 0.745 / 0.735 / 0.64 (no rescaling / pretrained / covariance / scratch), at 2000 0.915 /
0.885 / 0.88 / 0.79, all ~0.97 by 4500.  Upstream length is not stated [D: 60 epochs].

Local setting (shrunk to fit the CPU; every change is a field below): 16x16 crops of the embedded
`photos` (photos resized to short side 128, cells of 24 px; 10 classes = which photo), 64 conv
filters (not 256; with 32 the covariance arm lagged pretrained by 0.028 at the first evaluation and
neither beat scratch by a seed std there), batch 128 (not 256: 256 left the rescaled arms level
with scratch at the first evaluations), 1000 upstream crops with 10 random labels for 1500 steps
(random-label train accuracy 0.915), 5000 downstream crops with real labels for 300 steps (train
accuracy on the first 1000 every 15 steps), test = 1000 crops of the photos' disjoint `test` cells,
16 seeds (8 left the seed-mean gaps at the noise level of the 0.02 target), f_only's f from photos
at short side 256 (4 seeds).  Upstream 4000 crops (random-label accuracy 0.42) or 3000 upstream
steps (0.95) transferred no more (measured with 32 filters).
Expected local result (16 seeds, mean +- std; README "Fig 5"): train accuracy at 30 / 75 / 150
iterations: scratch 0.654 / 0.827 / 0.902, pretrained 0.763 / 0.876 / 0.942, no rescaling 0.784 /
0.902 / 0.965, covariance 0.753 / 0.879 / 0.940 (seed std 0.01-0.05); speed-up to 0.9 train
accuracy: pretrained 1.43x, no rescaling 1.66x, covariance 1.46x, PCA whitening 3.7x.  Covariance
within 0.012 of pretrained at every evaluation; first-half margins over scratch beyond the seed
std: +0.015 pretrained, +0.009 covariance.

Fashion-MNIST (`fmnist`, real data; Debian's dataset-fashion-mnist or idx files in data_dir):
    python -m experiments.transfer --config=experiments/configs/fig5.py:fmnist --workdir=workdirs/fig5_fmnist
  As the paper: downstream real labels on images disjoint from upstream, test on the 10,000 test
  images, SGD momentum 0.9, lr 0.01, batch 128; arms scratch, pretrained, no rescaling, covariance
  and our control covariance_rotated (covariance's filters rotated by a Haar-random Q per seed:
  the same spectrum and norm, no alignment), 16 seeds (the claims need >= 8 per arm, and 16 where
  arms differ by a few points).  Shrunk to fit ~40-60 min on a 2-core CPU, each for a reason:
  64 conv filters (not 256: 4x the cost); upstream 500 images with 10 random labels for 1200 steps
  at batch 64 (150 epochs: the upstream must FIT its random labels for anything to transfer, and
  on 20k images a CPU budget does not; measured: 4 seeds at 0.23-0.89 train accuracy, where 1000
  images for 1500 steps left 2 of 8 at chance); downstream 5000 images for 800 steps (20 epochs,
  train accuracy on its first 1000 images every 20 steps): scratch rises to 0.99 and reaches 90%
  of its rise only at ~30% of the run, where the earlier 25k images x 300 steps (1.5 epochs) had
  scratch at 0.79 by step 60 (measured: scratch 0.76 / 0.86 / 0.99 at steps 40 / 160 / 800).
  Section 2.5's arms (covariance_L2 / L3, pretrained_f_L2) ran in an earlier 8-seed run
  (docs/fmnist.md); add them with --config.arms to rerun them.
  Measured (docs/fmnist_runs/fig5_fmnist): 4887 s on a 2-core Intel Xeon shared with another run
  (fp32 matmul 153 GFLOP/s at its start); 12 of 16 upstream seeds fitted their random labels to
  >= 2x chance (the other 4 stayed at chance, their dense layer 91-100% dead); every pretrained arm
  and covariance ahead of scratch over the whole curve by +0.044-0.047, covariance carrying 0.99
  [0.94, 1.05] of pretrained's gain, covariance_rotated no better than scratch.
"""

import ml_collections

from experiments.configs import common
from experiments.configs import shared
from rl_align.claims import paper

PAPER_REFERENCE = {k: v for k, v in paper.FIG5.items() if k != "downstream_steps"}
ARMS = (
  "scratch",
  "pretrained",
  "pretrained_no_rescaling",
  "covariance",
  "covariance_L2",
  "covariance_L3",
  "pca_whitening",
  "f_only",
)
# The fmnist run: the Fig 5 arms, the weight-scaling pair and the alignment control (section 2.5's
# arms ran in an earlier, 8-seed run: docs/fmnist.md).
FMNIST_ARMS = (
  "scratch",
  "pretrained",
  "pretrained_no_rescaling",
  "covariance",
  "covariance_rotated",
)
# fmnist sizes (module docstring says why each is shrunk): upstream images / steps / batch, the
# downstream images / steps, seeds.
FMNIST = {
  "upstream": 500,
  "upstream_steps": 1200,
  "upstream_batch": 64,
  "downstream": 5000,
  "downstream_steps": 800,
  "seeds": 16,
}


def shared_fields() -> ml_collections.ConfigDict:
  """Fields shared by the Fig 1 and Fig 5 configs (paper-scale values)."""
  c = common.base_config()
  c.title = "Fig 5: transfer of the first layer"
  c.figure_name = "fig5.png"
  c.claims.figure = "fig5"
  c.data = ml_collections.ConfigDict(shared.data_block("cifar10"))
  # data.placement: device | host (stream batches from the host pipeline, same results) | auto.
  # One seeded permutation of the train split: upstream = first 20k, downstream = next 25k.
  c.split = ml_collections.ConfigDict(
    {"upstream": 20_000, "downstream": 25_000, "test": 0, "seed": 0}
  )
  c.model = ml_collections.ConfigDict(
    {
      "name": "paper_cnn",
      "features": 256,
      "kernel_size": 3,
      "hidden": 64,
      "num_classes": 10,
      "kernel_init": "lecun_normal",
      "dtype": "float32",
    }
  )
  t = c.train
  t.optimizer, t.learning_rate, t.momentum, t.batch_size = "momentum", 0.01, 0.9, 256
  t.num_seeds = 8
  t.seed = 0
  t.train_eval_examples = 5000
  t.eval_batch_size = 1000
  t.checkpoint_every_secs = 120.0
  c.upstream = ml_collections.ConfigDict(
    {
      "num_classes": 10,  # K random classes
      "num_steps": 4700,  # [D] ~60 epochs of 20k at batch 256
      "eval_every_steps": 500,
      "train_eval_examples": 5000,
      "seed": 0,  # engine root seed (init, data order)
      "label_seed": 1,  # random labels: their own root seed
      "min_train_accuracy": 0.3,  # below this a warning: too little fitting to transfer
    }
  )
  c.downstream = ml_collections.ConfigDict(
    {
      "labels": "real",  # real | random (fresh random labels, Fig 1 bottom)
      "num_random_classes": 10,
      "label_seed": 2,
      "seed": 3,  # engine root seed: data order, fresh inits, covariance samples
      "num_steps": 4500,
      "eval_every_steps": 50,
      "train_eval_examples": 5000,  # the fixed subset of the downstream set train accuracy uses
    }
  )
  c.arms = ARMS
  c.transfer_layers = 1  # layers the pretrained arms carry (0: all but the head)
  # Layers drawn by covariance / covariance_L<n> / f_only scaled to their fresh init's L2 norm
  # (the pretrained arm's weight-scaling control) [D]; False: the trained scale.
  c.rescale_sampled = True
  # Section 2.5: inputs (images) the layer-l covariances are taken over, bins of the pooled f_l.
  c.layerwise = ml_collections.ConfigDict({"num_examples": 2000, "num_bins": 24})
  c.pca_whitening = ml_collections.ConfigDict({"eps": 5e-4})
  # f_only: f of another dataset.  source "upstream": the main upstream run (f against the upstream
  # split's covariance, applied to the downstream split's); "data": a separate upstream run on
  # f_only.data (trained like the upstream, f_only.upstream overriding), here CIFAR10 at 16x16.
  c.f_only = ml_collections.ConfigDict(
    {
      "source": "data",
      "data": shared.data_block("cifar10", {"image_size": 16}),
      "split": {"upstream": 20_000, "downstream": 0, "test": 0, "seed": 1},
      "upstream": {"num_steps": 4700},
    }
  )
  c.speedup_thresholds = (0.7, 0.8, 0.9)
  c.report_steps = (500, 1000, 2000, 4500)
  c.paper_reference = PAPER_REFERENCE
  return c


def local(c) -> ml_collections.ConfigDict:
  c.title = "Fig 5 (local: 16x16 photo crops, conv 64, 16 seeds)"
  c.data = ml_collections.ConfigDict(shared.data_block("photos", shared.local_photos(6000), 1000))
  c.split = ml_collections.ConfigDict({"upstream": 1000, "downstream": 5000, "test": 0, "seed": 0})
  c.model.features = 64  # 32 left covariance 0.028 behind pretrained at the first evaluation
  t = c.train
  t.batch_size = 128
  t.num_seeds = 16  # 8 left the seed-mean gaps at the noise level of the 0.02 target
  t.train_eval_examples = 1000
  t.checkpoint_every_secs = 60.0
  c.upstream.update({"num_steps": 1500, "eval_every_steps": 250, "train_eval_examples": 1000})
  c.downstream.update({"num_steps": 300, "eval_every_steps": 15, "train_eval_examples": 1000})
  c.layerwise.num_examples = 1000
  # f from photos at another resolution (short side 256: a 16x16 crop spans half the field of view).
  c.f_only.source = "data"
  far = dict(shared.local_photos(1000), short_side=256, cell=48)
  c.f_only.data = shared.data_block("photos", far)
  c.f_only.split = {"upstream": 1000, "downstream": 0, "test": 0, "seed": 1}
  c.f_only.upstream = {"num_steps": 1500, "num_seeds": 4}
  c.speedup_thresholds = (0.8, 0.9, 0.95)
  c.report_steps = (30, 75, 150, 300)
  c.paper_reference = None
  return c


def tiny(c) -> ml_collections.ConfigDict:
  c = local(c)
  c.title = "Fig 5 (tiny smoke run)"
  c.data.kwargs = {"size": 8, "short_side": 64, "cell": 12, "seed": 0, "n": 256}
  c.data.test_examples = 64
  c.split.update({"upstream": 128, "downstream": 128})
  c.model.features, c.model.hidden = 8, 16
  t = c.train
  t.batch_size, t.num_seeds, t.train_eval_examples = 32, 2, 128
  c.upstream.update({"num_steps": 20, "eval_every_steps": 10, "train_eval_examples": 128})
  c.downstream.update(
    {"num_steps": 20, "eval_every_steps": 5, "batch_size": 32, "train_eval_examples": 128}
  )
  c.layerwise.num_examples = 64
  c.layerwise.num_bins = 8
  c.f_only.data = shared.data_block(
    "photos", {"size": 8, "short_side": 96, "cell": 24, "seed": 0, "n": 64}
  )
  c.f_only.split = {"upstream": 64, "downstream": 0, "test": 0, "seed": 1}
  c.f_only.upstream = {"num_steps": 10, "num_seeds": 2}
  c.speedup_thresholds = (0.2, 0.3)
  c.report_steps = (10, 20)
  return c


def fmnist(c, tiny_run: bool = False) -> ml_collections.ConfigDict:
  """Fashion-MNIST with the paper's protocol where a 2-core CPU allows (module docstring)."""
  if tiny_run:
    c = tiny(c)
    c.data = shared.fmnist_data()
    c.data.test_examples = 64
    c.f_only.source = "upstream"
    c.arms = FMNIST_ARMS
    return c
  f = FMNIST
  c.title = (
    f"Fig 5 (Fashion-MNIST: conv 64, {f['upstream']} upstream, {f['downstream']} "
    f"downstream, {f['seeds']} seeds)"
  )
  c.data = shared.fmnist_data()
  c.split = ml_collections.ConfigDict(
    {"upstream": f["upstream"], "downstream": f["downstream"], "test": 0, "seed": 0}
  )
  c.model.features = 64
  t = c.train
  t.batch_size, t.num_seeds, t.train_eval_examples = 128, f["seeds"], 1000
  t.checkpoint_every_secs = 60.0
  c.upstream.update(
    {
      "num_steps": f["upstream_steps"],
      "batch_size": f["upstream_batch"],
      "eval_every_steps": 200,
      "train_eval_examples": f["upstream"],
    }
  )
  c.downstream.update(
    {"num_steps": f["downstream_steps"], "eval_every_steps": 20, "train_eval_examples": 1000}
  )
  c.layerwise.num_examples = 1000
  c.arms = FMNIST_ARMS
  c.f_only.source = "upstream"
  c.speedup_thresholds = (0.8, 0.9, 0.95)
  c.report_steps = (100, 200, 400, 800)
  c.paper_reference = None
  return c


@common.with_download
def get_config(arg: str = "") -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg, scale=common.OneOf("paper", "local", "tiny"), all_layers=False, random=False, fmnist=False
  )
  shared.check_fmnist_scale(a.fmnist, a.scale)
  c = shared_fields()
  if a.fmnist:
    c = fmnist(c, tiny_run=a.scale == "tiny")
  elif a.scale == "local":
    c = local(c)
  elif a.scale == "tiny":
    c = tiny(c)
  if a.all_layers:
    c.transfer_layers = 0
  if a.random:
    c.downstream.labels = "random"
    c.paper_reference = None
  return c
