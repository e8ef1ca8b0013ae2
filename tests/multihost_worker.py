"""One process of a host-fed training run, for tests/test_multihost.py.

    python -m tests.multihost_worker --out DIR [--device] [--num_epochs E] \
        [--buffer_steps T --kill_at_step K] [--layout NAME] \
        [--coordinator 127.0.0.1:PORT --num_processes N --process_id I]
    python -m tests.multihost_worker --out DIR --jobs JSON [--coordinator ...]

Trains `models.PaperCNN(features=4, hidden=8, num_classes=4)`, 4 seeds (`--num_seeds`), 2 epochs,
batch 16, on the embedded photos (96 examples, 8x8) with random labels (root seed 1), either
host-fed (`pipeline.HostFeed`, the default) or device-resident (`--device`: the standardized array
and `seeds.random_labels`), with a workdir (DIR/workdir, checkpoints included).  Process 0 writes
DIR/params.npz (the flattened leaves of the final params, `leaf_0000`, ...) and
DIR/train_accuracy.npy.  Every process writes DIR/feed_<process_id>.json: the seed ids and steps of
every chunk a HostFeed loaded in it (the training batches only; the engine's train eval set comes
from `HostFeed.head`).  --buffer_steps sets the host feed's buffer length; --kill_at_step K
SIGKILLs the process when its feed starts loading the buffer at step >= K (the engine is then a
buffer or two behind, with checkpoints at every log step, which only such a run writes): a crash
in the middle of a run.
--layout forces the engine's layout by its name (`engine.layout.Layout.name`): "vmap" or another
member lift alone trains `models.DenseNet(widths=(8,), num_classes=4)` (a dense net has no conv
implementation), "LIFT_IMPL" (e.g. "vmap_im2col", "vmap_pallas") the PaperCNN; "auto" (default):
the PaperCNN in the engine's choice.  Every feed_<process_id>.json also records the layout run.

--jobs runs several such trainings one after the other in the same process(es) (one process
start-up and one jax.distributed initialization for all): a JSON list of objects, each with a
"name" (its output folder DIR/<name>, as DIR above) and any of the flags above as fields
("device", "num_epochs", "buffer_steps", "layout", "num_seeds"); the other flags are the defaults.
"""

import argparse
import json
import os
import signal

from rl_align import distributed


def _cfg(num_seeds, num_epochs=2, every_log_step=False):
  """The trainings' config; checkpoints at every log step only for a run that is killed (each save
  of 2 processes synchronizes them, ~0.5 s on CPU), else at the end alone."""
  from tests.helpers import train_config  # pylint: disable=g-import-not-at-top

  return train_config(
    num_seeds=num_seeds,
    num_epochs=num_epochs,
    batch_size=16,
    log_every_steps=3,
    train_eval_examples=32,
    seed=5,
    checkpoint_every_secs=0.0 if every_log_step else 1e9,
  )


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--device", action="store_true", help="device-resident reference run")
  ap.add_argument("--num_seeds", type=int, default=4)
  ap.add_argument("--num_epochs", type=int, default=2)
  ap.add_argument("--buffer_steps", type=int, default=0, help="host feed buffer length (0: auto)")
  ap.add_argument("--kill_at_step", type=int, default=0, help="SIGKILL itself there (0: never)")
  ap.add_argument("--layout", default="auto", help="engine layout name, e.g. vmap_im2col")
  ap.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
  ap.add_argument("--num_processes", type=int, default=None)
  ap.add_argument("--process_id", type=int, default=None)
  ap.add_argument("--jobs", default=None, help="JSON list of trainings, one after the other")
  args = ap.parse_args(argv)
  if args.coordinator:  # before anything touches a device
    distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=120)
  if args.jobs is None:
    _train(args)
    return
  for job in json.loads(args.jobs):
    one = argparse.Namespace(**vars(args))
    one.out = os.path.join(args.out, job.pop("name"))
    for k, v in job.items():
      assert hasattr(one, k), k
      setattr(one, k, v)
    _train(one)


def _train(args) -> None:
  """One training run (the module docstring), outputs in args.out."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.INFO)  # the engine's "on N cpu device(s) in P process(es)" line
  from rl_align import pipeline  # pylint: disable=g-import-not-at-top

  loads = []  # (seed ids, t0, t1) of every chunk a HostFeed loaded in this process
  load = pipeline.HostFeed.load

  def recording_load(self, t0, t1):
    if args.kill_at_step and t0 >= args.kill_at_step:
      os.kill(os.getpid(), signal.SIGKILL)
    loads.append({"seed_ids": list(self.seed_ids), "t0": int(t0), "t1": int(t1)})
    return load(self, t0, t1)

  pipeline.HostFeed.load = recording_load
  try:
    _run(args, loads)
  finally:
    pipeline.HostFeed.load = load


def _run(args, loads) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rl_align import data, models, pipeline, seeds, train  # pylint: disable=g-import-not-at-top

  cfg = _cfg(args.num_seeds, args.num_epochs, every_log_step=bool(args.kill_at_step))
  model = models.PaperCNN(features=4, hidden=8, num_classes=4)
  if args.layout != "auto":
    cfg.member_lift, _, impl = args.layout.partition("_")
    cfg.conv_impl = impl or "auto"
    model = model.clone(conv_impl=impl) if impl else models.DenseNet(widths=(8,), num_classes=4)
  src = data.source("photos", n=96, size=8, seed=0)
  mean, std = data.channel_stats(src)
  os.makedirs(args.out, exist_ok=True)
  pid = jax.process_index()
  workdir = os.path.join(args.out, "workdir")
  if args.device:
    x_u8, _ = src.take(np.arange(len(src)))
    x = data.standardize(data.to_unit_float(x_u8), mean, std)
    labels = seeds.random_labels(1, seeds.seed_ids(cfg), len(x), 4)
    res = train.train(model, cfg, x, labels, workdir=workdir)
  else:
    feed = pipeline.HostFeed(
      src,
      seed_ids=seeds.seed_ids(cfg),
      data_seed=cfg.seed,
      batch_size=cfg.batch_size,
      mean=mean,
      std=std,
      labels=pipeline.RandomLabels(1, 4),
    )
    if args.buffer_steps:  # buffers of that many steps for up to 4 local members
      feed.chunk_bytes = (
        args.buffer_steps * 4 * 4 * cfg.batch_size * int(np.prod(src.example_shape))
      )
    res = train.train(model, cfg, feed, None, workdir=workdir)

  with open(os.path.join(args.out, f"feed_{pid}.json"), "w") as f:
    json.dump(
      {
        "process_index": pid,
        "process_count": jax.process_count(),
        "devices": len(jax.devices()),
        "local_devices": len(jax.local_devices()),
        "loads": loads,
        "layout": res.layout,
      },
      f,
    )
  if pid == 0:  # res.params are host (numpy) arrays, gathered from every process by `train`
    leaves = jax.tree.leaves(res.params)
    np.savez(
      os.path.join(args.out, "params.npz"),
      **{f"leaf_{i:04d}": np.asarray(a) for i, a in enumerate(leaves)},
    )
    np.save(
      os.path.join(args.out, "train_accuracy.npy"), np.asarray(res.final_metrics["train_accuracy"])
    )
  print(f"process {pid}/{jax.process_count()}: done, step {res.final_step}", flush=True)


if __name__ == "__main__":
  main()
