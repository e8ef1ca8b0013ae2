r"""Section 3: specialization and negative transfer after random-label pretraining.

Commands:
  local (embedded sklearn digits 8x8, dense net, 2-core CPU; runtime below):
    python -m experiments.specialization --config=experiments/configs/specialization.py:local --workdir=workdirs/specialization
  tiny smoke run (CI):  specialization.py:tiny
  paper scale (GPU/TPU, tfds cifar10 / imagenet prepared in $TFDS_DATA_DIR):
    specialization.py:vgg16_cifar10     VGG16 (the paper's Fig 1 protocol: 20k upstream, 25k downstream)
    specialization.py:resnet18_cifar10  ResNet18, same protocol
    specialization.py:resnet18_imagenet ResNet18 on imagenet_resized/32x32 (shrink the split to taste)
Arguments: exactly one of local | tiny | vgg16_cifar10 | resnet18_cifar10 | resnet18_imagenet
(setting=...; default local).  Anything else is an error.

What runs: for every (width of the later layers, learning rate) one upstream engine run trains
num_seeds seeds per K on K random labels (the K values share the run: head of size max K, labels of
the seeds of point K drawn in [0, K)); snapshots at every upstream length L start the downstream
arms (pretrained: hidden layers carried over, head re-initialized; rescaled: each tensor rescaled to
its init L2 norm, head re-initialized), which train on a disjoint split with the real labels next to
scratch seeds, all in one downstream engine run.  gain = mean scratch iterations / mean arm iterations
to reach `downstream.threshold` train accuracy.  Activity (rl_align.activity) is logged on a fixed
probe batch (the first `probe_examples` downstream inputs) at every eval step of both phases.

Expected runtime of `local` (15 cells of 16 upstream seeds x 4000 steps and 104 downstream seeds x
400 steps): 883 s of CPU time, 30 min wall while other jobs kept the load average near 9, on a 2-core
Intel Xeon (developers' machine, 2026-11-27; fp32 matmul peak not recorded in that run); an idle
run of that machine was not timed (the CPU time suggests 8-10 min).  Paper-scale configs: not run
(no accelerator here), guessed at an hour per (width, lr) cell on one GPU: shrink sweep.* or arms.
Expected result of `local` (8 seeds per point, README "Specialization"):
  negative: width 16, lr 0.01, K 50, L 4000: gain < 0.56 (censored: 2 of 8 pretrained seeds never
    reach 0.95 train accuracy in 400 steps; bootstrap 5-95% [0.43, 0.73]); the last hidden layer's
    active fraction drops 0.42 -> 0.27 within 20 steps of the switch (flat before it) and its dead
    fraction rises 0.01 -> 0.22 (scratch seeds of the same net: 0.48 -> 0.37, dead ~0.05).
  wide: the same with width 256: gain 1.13 [1.02, 1.24]; drop 0.52 -> 0.42, no dead units.
  Over the 84 of 90 pretrained points where scratch reaches the threshold, gain rises with width
  (Spearman 0.76); larger lr and K widen the
  negative region (lr 0.05, K 50, L 4000: widths 32-128 at gain 0.34-0.51, width 256 at 1.20).
Paper (section 3): later-layer activations drop sharply at the switch in negative-transfer
settings; widening the later layers restores positive transfer.

Fashion-MNIST (`fmnist`, real data; Debian's dataset-fashion-mnist or idx files in data_dir):
    python -m experiments.specialization --config=experiments/configs/specialization.py:fmnist --workdir=workdirs/spec_fmnist
  The local design (dense net 784 -> 256 -> w -> w -> 10 on flattened images), 8 seeds per point,
  in the memorisation regime section 3 is about: 1000 upstream images (not 5000: at 5000 the
  upstream fitted its random labels to 0.02-0.65 only, with 71-95% of the width-16 units dead),
  upstream 2000 / 8000 steps of 32 (64 / 256 epochs), K 10 / 50, lr 0.01 / 0.05, widths
  16 / 64 / 256; 5000 downstream images with the real labels, threshold 0.85 train accuracy, test
  on 2000 test images.  About 30 min on a 2-core CPU.  `tiny,fmnist` is a smoke run (CI).
  Measured (docs/fmnist_runs/spec_fmnist: 908 s on a 2-core Intel Xeon, 331 GFLOP/s peak in its
  run.json): 18 of 48 points memorised with their later layers alive (all at lr 0.01); of those,
  width 16 / K 10 / 8000 steps / pretrained trails scratch over the whole curve (-0.045, 95% [-0.083,
  -0.007], 8 seeds) but not once corrected for the 18 points searched, width 64 is level with
  scratch and width 256 ahead (+0.010..+0.018, resolved after the correction); lr 0.05 never
  memorised (fit 0.04-0.65).
The confirmatory run of that one point (`fmnist,confirm`): a point chosen by a search must be
tested again on fresh seeds, where no correction for the search is owed:
    python -m experiments.specialization --config=experiments/configs/specialization.py:fmnist,confirm --workdir=workdirs/spec_confirm_fmnist
  The same design at width 16 / lr 0.01 / K 10 / 8000 upstream steps, arm `pretrained`, and its
  width-256 variant (the widening claim), 16 fresh seeds (train.seed 100: a new root seed, so new
  inits, data orders and random labels).  Measured: 192 s on a 2-core Intel Xeon (278 GFLOP/s
  fp32 matmul at its start).

The Fig 1 search on Fashion-MNIST (`vgg16_fmnist`): Fig 1's fmnist column (VGG16 at 1/8 width on
32x32 images, 2000 upstream / 25k downstream images, batch 64, momentum 0.9, 8 seeds) as a sweep of
this binary: K 10 / 100 random classes and upstream length 1000 / 2000 share one upstream run per
lr; the lr is swept with the sweep driver (one point per lr, each with its own sweep.csv row):
    python -m experiments.specialization --config=experiments/configs/specialization.py:vgg16_fmnist \
        "--sweep=sweep.learning_rates=(0.01,),(0.02,)" --workdir=workdirs/fig1_search
  Arm: `rescaled` only (Fig 1's "pretrained": every tensor at its init L2 norm, head re-initialized);
  downstream 300 steps (0.8 epochs of 25k), train accuracy on 500 images every 20 steps, threshold
  0.8.  Shrunk to fit ~35 min per lr on a 2-core CPU: width, upstream images, one arm, downstream
  steps.  Per point: gain and `accuracy_behind_fraction` / `accuracy_ahead_fraction` (the share of
  logged steps at which the arm is behind / ahead of scratch by > 1 SE), and the later layers'
  (conv_7..conv_12) activity at the switch.  `vgg16_fmnist_tiny` is a smoke run (CI).
"""

import ml_collections

from experiments.configs import common
from experiments.configs import shared
from rl_align import errors

SETTINGS = (
  "local",
  "tiny",
  "vgg16_cifar10",
  "resnet18_cifar10",
  "resnet18_imagenet",
  "vgg16_fmnist",
  "vgg16_fmnist_tiny",
)


def _common() -> ml_collections.ConfigDict:
  c = common.base_config()
  c.claims.figure = "specialization"
  c.labels = "random"  # upstream labels; downstream always uses the real labels
  c.split = ml_collections.ConfigDict({"upstream": 700, "downstream": 700, "test": 397, "seed": 0})
  c.probe_examples = 256  # first downstream inputs: the fixed probe batch of the activity
  c.activity_layers = ()  # () = every ReLU layer of the model
  c.later_layers_from = -1  # index (among the ReLU layers) of the first "later" layer reported
  # in the summary; -1: sweep.width_from
  c.arms = ("pretrained", "rescaled")
  c.upstream = ml_collections.ConfigDict({"eval_every_steps": 50})
  c.downstream = ml_collections.ConfigDict(
    {
      "num_steps": 400,
      "eval_every_steps": 5,
      "learning_rate": 0.0,  # 0: the sweep point's learning rate (both phases)
      "threshold": 0.95,  # train accuracy both arms must reach; gain = ratio of iterations
      "drop_window": 20,  # steps after the switch in which the activity drop is measured
      "train_eval_examples": 700,
    }
  )
  c.sweep = ml_collections.ConfigDict(
    {
      "width_field": "widths",  # model field that sets the width of the later layers
      "width_from": 1,  # tuple fields: entries from this index on are the later layers
      "widths": (16, 32, 64, 128, 256),
      "learning_rates": (0.01, 0.02, 0.05),
      "num_random_classes": (10, 50),
      "upstream_steps": (250, 1000, 4000),
    }
  )
  # The point drawn in specialization_activity.png, and the width of its wide variant.
  c.highlight = ml_collections.ConfigDict(
    {
      "negative": {
        "width": 16,
        "learning_rate": 0.01,
        "num_random_classes": 50,
        "upstream_steps": 4000,
        "arm": "pretrained",
      },
      "wide_width": 256,
    }
  )
  t = c.train
  t.optimizer, t.momentum, t.batch_size = "momentum", 0.9, 32
  t.num_seeds = 8  # per sweep point (and per arm)
  t.train_eval_examples = 700
  t.checkpoint_every_secs = 60.0
  return c


def _local(c):
  c.data = ml_collections.ConfigDict(
    {"name": "digits", "kwargs": {}, "data_dir": "", "standardize": True, "placement": "device"}
  )
  c.model = ml_collections.ConfigDict(
    {
      "name": "dense",
      "widths": (256, 32, 32),
      "num_classes": 10,
      "kernel_init": "he_normal",
      "dtype": "float32",
    }
  )
  return c


def _tiny(c):
  c = _local(c)
  c.split.update({"upstream": 128, "downstream": 128, "test": 64})
  c.probe_examples = 32
  c.upstream.eval_every_steps = 10
  c.downstream.update(
    {
      "num_steps": 20,
      "eval_every_steps": 5,
      "drop_window": 10,
      "train_eval_examples": 128,
      "threshold": 0.5,
    }
  )
  c.sweep.update(
    {
      "widths": (8, 32),
      "learning_rates": (0.05,),
      "num_random_classes": (3, 6),
      "upstream_steps": (10, 20),
    }
  )
  c.model.widths = (32, 8, 8)
  c.highlight.negative = {
    "width": 8,
    "learning_rate": 0.05,
    "num_random_classes": 6,
    "upstream_steps": 20,
    "arm": "pretrained",
  }
  c.highlight.wide_width = 32
  c.train.num_seeds = 2
  c.train.train_eval_examples = 128
  c.train.batch_size = 16
  return c


def _paper(c, model: str, dataset: str):
  """The paper's Fig 1 protocol: 20k upstream, 25k downstream (disjoint), per-channel standardization."""
  if dataset == "cifar10":
    c.data = ml_collections.ConfigDict(
      {"name": "cifar10", "kwargs": {}, "data_dir": "", "standardize": True, "placement": "device"}
    )
  else:
    c.data = ml_collections.ConfigDict(
      {
        "name": "imagenet",
        "kwargs": {"image_size": 32},
        "data_dir": "",
        "standardize": True,
        "placement": "device",
      }
    )
  c.split = ml_collections.ConfigDict(
    {"upstream": 20_000, "downstream": 25_000, "test": 0, "seed": 0}
  )
  c.probe_examples = 512
  if model == "vgg16":
    # width = base channel count (64 in VGG16); convs from widen_from = 7 on (the 512-channel
    # blocks 4 and 5) get width/64 times their channels: the sweep widens the later layers only.
    c.model = ml_collections.ConfigDict(
      {
        "name": "vgg16",
        "num_classes": 10,
        "width": 64,
        "widen_from": 7,
        "init_scale": 1.0,
        "dtype": "float32",
      }
    )
    c.later_layers_from = 7
  else:
    # ResNet18's width scales every stage (models.ResNet18 has no later-layers-only switch).
    c.model = ml_collections.ConfigDict(
      {"name": "resnet18", "num_classes": 10, "width": 64, "dtype": "float32"}
    )
    c.later_layers_from = 9  # conv_9 .. conv_16: the last two stages
  c.sweep.width_field = "width"
  c.sweep.width_from = 0
  c.sweep.widths = (16, 32, 64, 128)
  c.sweep.learning_rates = (0.01, 0.05, 0.1)
  c.sweep.num_random_classes = (10, 100)
  c.upstream.eval_every_steps = 500
  c.sweep.upstream_steps = (1000, 5000, 20_000)
  c.downstream.update(
    {
      "num_steps": 5000,
      "eval_every_steps": 50,
      "threshold": 0.9,
      "drop_window": 200,
      "train_eval_examples": 5000,
    }
  )
  c.highlight.negative = {
    "width": 16,
    "learning_rate": 0.1,
    "num_random_classes": 100,
    "upstream_steps": 20_000,
    "arm": "pretrained",
  }
  c.highlight.wide_width = 128
  t = c.train
  t.batch_size, t.num_seeds, t.train_eval_examples = 128, 4, 5000
  t.eval_batch_size = 1000
  t.checkpoint_every_secs = 600.0
  return c


def _fmnist(c, tiny: bool, confirm: bool = False):
  """Fashion-MNIST (flattened 28x28, dense net): the local design on real images, 8 seeds;
  `confirm`: the one memorised negative point the search found, on 16 fresh seeds."""
  c.data = ml_collections.ConfigDict(shared.fmnist_data())
  c.data.test_examples = 2000
  c.split = ml_collections.ConfigDict({"upstream": 5000, "downstream": 5000, "test": 0, "seed": 0})
  c.downstream.train_eval_examples = 1000
  c.train.train_eval_examples = 1000
  if tiny:  # tiny's sweep, sizes and threshold
    c.split.update({"upstream": 128, "downstream": 128})
    c.data.test_examples = 64
    c.downstream.train_eval_examples = c.train.train_eval_examples = 128
    return c
  c.downstream.threshold = 0.85
  # The memorisation regime section 3 is about: the upstream fits its random labels (>= 0.9) on few
  # images (1000) over a long upstream (2000 / 8000 steps of 32: 64 / 256 epochs), over two
  # learning rates.
  c.split.upstream = 1000
  c.upstream.eval_every_steps = 500
  c.sweep.update(
    {
      "widths": (16, 64, 256),
      "learning_rates": (0.01, 0.05),
      "num_random_classes": (10, 50),
      "upstream_steps": (2000, 8000),
    }
  )
  c.highlight.negative = {
    "width": 16,
    "learning_rate": 0.05,
    "num_random_classes": 50,
    "upstream_steps": 8000,
    "arm": "pretrained",
  }
  if confirm:
    c.sweep.update({"widths": (16, 256), "learning_rates": (0.01,), "num_random_classes": (10,)})
    c.sweep.upstream_steps = (8000,)
    c.arms = ("pretrained",)
    c.train.update(seed=100, num_seeds=16)
    c.highlight.negative.update(learning_rate=0.01, num_random_classes=10)
  return c


def _vgg16_fmnist(c, tiny: bool):
  """The Fig 1 negative-transfer search on Fashion-MNIST: Fig 1's fmnist column (VGG16 at 1/8
  width, 32x32, 2000 upstream / 25k downstream images, batch 64, 8 seeds) as a section 3 sweep."""
  c.data = ml_collections.ConfigDict(shared.fmnist_data())
  c.data.kwargs = {"image_size": 32}
  c.data.test_examples = 2000
  c.split = ml_collections.ConfigDict(
    {"upstream": 2000, "downstream": 25_000, "test": 0, "seed": 0}
  )
  c.model = ml_collections.ConfigDict(
    {
      "name": "vgg16",
      "num_classes": 10,
      "width": 8,
      "widen_from": 0,
      "init_scale": 1.0,
      "kernel_init": "he_normal",
      "dtype": "float32",
    }
  )
  c.later_layers_from = 7  # conv_7 .. conv_12: the 512-channel blocks of VGG16
  c.arms = ("rescaled",)  # Fig 1's "pretrained" arm (each tensor at its init L2 norm)
  c.probe_examples = 256
  c.upstream.eval_every_steps = 100
  c.downstream.update(
    {
      "num_steps": 300,
      "eval_every_steps": 20,
      "threshold": 0.8,
      "drop_window": 20,
      "train_eval_examples": 500,
    }
  )
  c.sweep.update(
    {
      "width_field": "width",
      "width_from": 0,
      "widths": (8,),
      "learning_rates": (0.02,),
      "num_random_classes": (10, 100),
      "upstream_steps": (1000, 2000),
    }
  )
  c.highlight.negative = {
    "width": 8,
    "learning_rate": 0.02,
    "num_random_classes": 100,
    "upstream_steps": 2000,
    "arm": "rescaled",
  }
  c.highlight.wide_width = 8
  t = c.train
  t.batch_size, t.num_seeds, t.train_eval_examples = 64, 8, 1000
  t.checkpoint_every_secs = 120.0
  if tiny:
    c.split.update({"upstream": 64, "downstream": 128})
    c.data.test_examples = 64
    c.model.width = 2
    c.probe_examples = 32
    c.upstream.eval_every_steps = 10
    c.downstream.update(
      {
        "num_steps": 20,
        "eval_every_steps": 5,
        "drop_window": 10,
        "train_eval_examples": 64,
        "threshold": 0.3,
      }
    )
    c.sweep.update({"widths": (2,), "num_random_classes": (3, 6), "upstream_steps": (10, 20)})
    c.highlight.negative = {
      "width": 2,
      "learning_rate": 0.02,
      "num_random_classes": 6,
      "upstream_steps": 20,
      "arm": "rescaled",
    }
    c.highlight.wide_width = 2
    t.batch_size, t.num_seeds, t.train_eval_examples = 16, 2, 64
  return c


@common.with_download
def get_config(arg: str = "local") -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, setting=common.OneOf(*SETTINGS), fmnist=False, confirm=False)
  setting = a.setting
  if a.confirm and not (a.fmnist and setting == "local"):
    raise errors.ConfigError(
      "specialization.py: confirm is the confirmatory run of the Fashion-MNIST search. "
      "Fix: specialization.py:fmnist,confirm."
    )
  if a.fmnist and setting not in ("local", "tiny"):
    raise errors.ConfigError(
      f"specialization.py: fmnist goes with local (default) or tiny, not "
      f"{setting!r}. Fix: specialization.py:fmnist."
    )
  c = _common()
  if setting == "tiny":
    c = _tiny(c)
    return _fmnist(c, tiny=True) if a.fmnist else c
  if setting == "local":
    c = _local(c)
    return _fmnist(c, tiny=False, confirm=a.confirm) if a.fmnist else c
  if setting.startswith("vgg16_fmnist"):
    c.claims.figure = "fig1_search"
    return _vgg16_fmnist(c, tiny=setting.endswith("_tiny"))
  model, dataset = setting.split("_")
  return _paper(c, model, dataset)
