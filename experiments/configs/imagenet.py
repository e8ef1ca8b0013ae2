r"""ImageNet: random-label pretraining transfers positively with VGG16 and ResNet18 (the paper's Table 1).

Commands (tfds `imagenet_resized/{32x32,64x64}` or `imagenet2012` prepared in $TFDS_DATA_DIR as
ArrayRecord; one GPU):
    python -m experiments.transfer --config=experiments/configs/imagenet.py:vgg16,res=64 --workdir=workdirs/imagenet_vgg16_64
    python -m experiments.transfer --config=experiments/configs/imagenet.py:resnet18,res=64 --workdir=workdirs/imagenet_resnet18_64
    python -m experiments.transfer --config=experiments/configs/imagenet.py:resnet18,res=32 --workdir=workdirs/imagenet_resnet18_32
  full ILSVRC-2012 at a chosen resolution (each image's central square, area-resized):
    python -m experiments.transfer --config=experiments/configs/imagenet.py:vgg16,imagenet2012,res=112 --workdir=workdirs/imagenet2012_vgg16_112
  preparing the data (on a machine with internet; copy the folder to $TFDS_DATA_DIR):
    tfds build imagenet_resized/64x64 --file_format=array_record
    tfds build imagenet2012 --manual_dir=DIR_WITH_THE_ILSVRC2012_TARS --file_format=array_record
  local variant (this CPU, embedded photos, ResNet18 at 1/8 width, placement=host):
    python -m experiments.transfer --config=experiments/configs/imagenet.py:resnet18,local --workdir=workdirs/imagenet_local

Arguments: vgg16 | resnet18 (model=...; default vgg16); imagenet_resized | imagenet2012
(dataset=...; default imagenet_resized); res=<int> (32 or 64 for imagenet_resized, any for
imagenet2012; default 64); paper | local | tiny (scale=...; default paper; tiny: a seconds-long
smoke run for tests under tfds mock data).  Anything else is an error.  [D] marks our default where
the paper is silent.

What the paper reports (Table 1): networks pretrained on ImageNet with random labels and then
trained on real labels train faster than from scratch, for VGG16 and for ResNet18: positive
transfer at ImageNet scale, as on CIFAR10 (Fig 1 left).  Its numbers are train and test accuracies
at the paper's (unstated here) resolution and schedule; they are not transcribed in this file.

Protocol (as Fig 1, at ImageNet scale): one seeded permutation of the train split (1,281,167
images) cuts it into two disjoint halves; upstream = the first half with K = 1000 random labels
(one draw per seed), downstream = the other half with the real labels; test = the validation split
(50,000).  Per-channel standardization from the upstream half (its first `data.stats_examples`
images, a random sample).  Arms: scratch, pretrained (every carried tensor rescaled to its init L2
norm, head re-initialized), pretrained_no_rescaling; the whole network but the head is carried.
Models: models.VGG16 (13 conv3x3 + 5 max-pools, flatten -> head; He-normal) and models.ResNet18
(3x3 stem, 4 stages x 2 basic blocks, average pool, head; no normalization, the last conv of each
branch starts at 0), 1000 classes.  [D] SGD momentum 0.9, lr 0.01, batch 128, 2 seeds, 10 upstream
and 10 downstream epochs.

`data.placement = "host"`: 640k images are 31 GB as float32 at 64x64 (7.9 GB at 32x32), so nothing
is loaded: each phase streams its batches from the host input pipeline (`rl_align.pipeline.HostFeed`,
grain over `tfds.data_source`, decoding and standardization on grain threads, the next chunk
prefetched to the devices while the current one trains), the statistics are streamed over the
first `data.stats_examples` upstream images (kept in WORKDIR/phases/standardization.json) and test
accuracy is streamed too.  `--config.data.placement=auto` keeps the data on the device when it
takes under 25% of its memory (an H200 at 64x64; the log says which it chose); `device` forces it.
The results are the same either way (tests/test_transfer.py compares them number for number).

Runtime on one GPU -- an ESTIMATE, not a measurement: model-steps = seeds x (upstream steps + 3
arms x downstream steps) = 2 x (50,040 + 3 x 50,040) = 400,320; FLOPs per example (forward +
backward, XLA's cost analysis): VGG16 1.49 G at 32x32 and 6.70 G at 64x64, ResNet18 2.90 G / 12.4
G.  At an assumed 100 TFLOP/s sustained (27% of the 370 TFLOP/s TF32 matmul peak measured on an
H200; the paper CNN, the only conv net measured there, ran at 10% of peak -- at that rate multiply
by 2.7):
    VGG16    32x32: 0.2 h    64x64: 1.0 h
    ResNet18 32x32: 0.4 h    64x64: 1.8 h
(`estimate_hours` computes these from a config).  imagenet2012 at resolution r costs about
(r / 64)^2 times the 64x64 numbers, plus JPEG decoding on the host.

Local variant (`local`): the same protocol on the embedded `photos` (16x16 crops of 10 photos,
label = which photo; upstream 2000 crops with 10 random labels for 1000 steps, downstream 4000
crops with the real labels for 600 steps, test 1000 crops of the photos' test cells), ResNet18 at
1/8 width, 4 seeds, batch 64, lr 0.01, placement host.  Measured (4 seeds, mean +- std; upstream
random-label train accuracy 0.38 +- 0.08): downstream train accuracy at it 50 / 100 / 200 / 600:
scratch 0.51 / 0.63 / 0.80 / 0.94, pretrained 0.57 / 0.76 / 0.89 / 0.98, no rescaling 0.55 /
0.74 / 0.85 / 0.97; test 0.78 +- 0.02 / 0.84 +- 0.02 / 0.80 +- 0.04; iterations to 0.5 / 0.7 /
0.8 train accuracy 2.45x / 1.38x / 1.44x fewer than scratch for pretrained (1.55x / 1.30x / 1.22x
without rescaling): positive transfer.  Runtime (placement=host): 7.0 min wall on a 2-core AMD
EPYC (fp32 matmul 116 GFLOP/s measured at the start, load average 1.6); the same config with
`--config.data.placement=device` gives the very same numbers.
"""

import ml_collections

from experiments.configs import common
from experiments.configs import fig5
from experiments.configs import shared
from rl_align import errors

# tfds imagenet_resized and imagenet2012 split sizes.
IMAGENET_TRAIN, IMAGENET_VALIDATION = 1_281_167, 50_000
RESIZED = (32, 64)  # the imagenet_resized resolutions this experiment uses
# Forward + backward FLOPs per example (XLA cost analysis of one gradient, batch 1, 1000 classes).
FLOPS_PER_EXAMPLE = {
  ("vgg16", 32): 1.49e9,
  ("vgg16", 64): 6.70e9,
  ("resnet18", 32): 2.90e9,
  ("resnet18", 64): 12.4e9,
}
ASSUMED_TFLOPS = 100.0  # sustained on one H200-class GPU: an assumption, see the docstring
ARMS = ("scratch", "pretrained", "pretrained_no_rescaling")


def _model(name: str, num_classes: int, width: int) -> ml_collections.ConfigDict:
  m = {
    "name": name,
    "num_classes": num_classes,
    "width": width,
    "kernel_init": "he_normal",
    "init_scale": 1.0,
    "dtype": "float32",
  }
  if name == "resnet18":
    m["residual_init_scale"] = 0.0
  return ml_collections.ConfigDict(m)


def paper(model: str, dataset: str, res: int) -> ml_collections.ConfigDict:
  """The ImageNet experiment at paper scale (one GPU)."""
  if dataset == "imagenet_resized" and res not in RESIZED:
    raise errors.ConfigError(
      f"imagenet.py: res={res} has no imagenet_resized config here. Fix: res=32 or res=64, or "
      f"add `imagenet2012` for any resolution (e.g. imagenet.py:{model},imagenet2012,res={res})."
    )
  if res < 32:
    raise errors.ConfigError(
      f"imagenet.py: res={res} is too small for {model} (VGG16's 5 max-pools need >= 32). "
      "Fix: res=32 or more."
    )
  c = fig5.shared_fields()
  name = "imagenet" if dataset == "imagenet_resized" else "imagenet2012"
  c.title = f"ImageNet ({dataset} {res}x{res}): {model} pretrained on random labels"
  c.figure_name = "imagenet.png"
  c.claims.figure = "table1"
  c.paper_reference = None
  c.data = ml_collections.ConfigDict(
    {
      "name": name,
      "kwargs": {"image_size": res},
      "data_dir": "",
      "standardize": True,
      "test_split": "validation",
      "test_examples": 0,
      "placement": "host",  # auto | device | host (data.choose_placement)
      "stats_examples": 50_000,  # [D] standardization statistics from this many upstream images
      # host input pipeline: grain threads, chunks prepared ahead, MB of float32 per chunk [D]
      "pipeline": {"num_threads": 8, "prefetch": 2, "chunk_mb": 512},
    }
  )
  half = IMAGENET_TRAIN // 2
  c.split = ml_collections.ConfigDict(
    {"upstream": half, "downstream": IMAGENET_TRAIN - half, "test": 0, "seed": 0}
  )
  c.model = _model(model, 1000, 64)
  c.arms = ARMS
  c.transfer_layers = 0
  t = c.train
  t.optimizer, t.momentum, t.learning_rate, t.batch_size = "momentum", 0.9, 0.01, 128
  t.num_seeds = 2
  t.train_eval_examples = 10_000
  t.eval_batch_size = 500
  t.checkpoint_every_secs = 600.0
  epoch = half // t.batch_size
  c.upstream.update(
    {
      "num_classes": 1000,
      "num_steps": 10 * epoch,
      "eval_every_steps": epoch,
      "train_eval_examples": 10_000,
      "min_train_accuracy": 0.01,
    }
  )
  c.downstream.update(
    {"num_steps": 10 * epoch, "eval_every_steps": epoch // 4, "train_eval_examples": 10_000}
  )
  c.f_only.source = "upstream"
  c.layerwise.num_examples = 1000
  c.speedup_thresholds = (0.1, 0.2, 0.3)
  c.report_steps = (epoch, 2 * epoch, 5 * epoch, 10 * epoch)
  return c


def local(c) -> ml_collections.ConfigDict:
  """The same binary and protocol on the embedded photos, on a 2-core CPU."""
  c.title = "ImageNet protocol, local: ResNet18 (1/8 width) on 16x16 photo crops"
  c.data = ml_collections.ConfigDict(
    {
      "name": "photos",
      "kwargs": shared.local_photos(6000),
      "data_dir": "",
      "standardize": True,
      "test_split": "test",
      "test_examples": 1000,
      "placement": "host",
      "stats_examples": 0,
      "pipeline": {"num_threads": 1, "prefetch": 1, "chunk_mb": 64},
    }
  )
  c.split = ml_collections.ConfigDict({"upstream": 2000, "downstream": 4000, "test": 0, "seed": 0})
  c.model = _model("resnet18", 10, 8)
  t = c.train
  t.batch_size, t.num_seeds, t.train_eval_examples, t.eval_batch_size = 64, 4, 1000, 1000
  t.checkpoint_every_secs = 60.0
  c.upstream.update(
    {
      "num_classes": 10,
      "num_steps": 1000,
      "eval_every_steps": 250,
      "train_eval_examples": 1000,
      "min_train_accuracy": 0.2,
    }
  )
  c.downstream.update({"num_steps": 600, "eval_every_steps": 25, "train_eval_examples": 1000})
  c.speedup_thresholds = (0.5, 0.7, 0.8)
  c.report_steps = (50, 100, 200, 600)
  return c


def tiny(c) -> ml_collections.ConfigDict:
  """Seconds-long smoke run of the paper-scale code path (tests, under tfds mock data)."""
  c.title += " (tiny)"
  c.data.stats_examples = 0
  c.data.test_examples = 16
  c.data.pipeline = {"num_threads": 1, "prefetch": 1, "chunk_mb": 8}
  c.split.update({"upstream": 24, "downstream": 24})
  c.model.width = 2
  t = c.train
  t.batch_size, t.num_seeds, t.train_eval_examples, t.eval_batch_size = 8, 2, 16, 16
  c.upstream.update({"num_steps": 3, "eval_every_steps": 3, "train_eval_examples": 16})
  c.downstream.update({"num_steps": 4, "eval_every_steps": 2, "train_eval_examples": 16})
  c.layerwise.num_examples = 16
  c.report_steps = (2, 4)
  return c


def estimate_hours(c, tflops: float = ASSUMED_TFLOPS) -> float:
  """Estimated GPU hours of a paper-scale config: model-steps x batch x FLOPs per example / rate."""
  res = int(c.data.kwargs.image_size)
  flops = FLOPS_PER_EXAMPLE[(c.model.name, min(RESIZED, key=lambda r: abs(r - res)))]
  flops *= (res / min(RESIZED, key=lambda r: abs(r - res))) ** 2
  steps = c.train.num_seeds * (c.upstream.num_steps + len(c.arms) * c.downstream.num_steps)
  return steps * c.train.batch_size * flops / (tflops * 1e12) / 3600


@common.with_download
def get_config(arg: str = "") -> ml_collections.ConfigDict:
  a = common.parse_arg(
    arg,
    model=common.OneOf("vgg16", "resnet18"),
    dataset=common.OneOf("imagenet_resized", "imagenet2012"),
    res=64,
    scale=common.OneOf("paper", "local", "tiny"),
  )
  c = paper(a.model, a.dataset, a.res)
  if a.scale == "local":
    if a.model != "resnet18":
      raise errors.ConfigError(
        "imagenet.py: the local variant runs ResNet18 only. Fix: imagenet.py:resnet18,local."
      )
    c = local(c)
  elif a.scale == "tiny":
    c = tiny(c)
  return c
