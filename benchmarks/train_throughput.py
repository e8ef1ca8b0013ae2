"""Training throughput, side by side in one process: the multi-seed engine vs per-seed loops.

Three workloads (``--model``): ``fig20_dense`` (Fig 20: 30 -> 2048 -> 256 -> 10, batch 128),
``paper_cnn`` (32x32x3, conv 256 3x3 VALID -> dense 64 -> 10, batch 256) and ``small_cnn``
(a reference conv 3 -> 32 -> 64 SAME, global average pool, batch 128).  Arms (``--arms``):

- ``engine``: ``rl_align.train``'s compiled multi-seed chunk (the function ``train.train`` runs
  between log steps: seeds sharded over every device, the per-device layout from ``--layout``).
  Timed: ``steps`` steps of all S seeds per round, after a 1-step warm-up call that compiles it;
  eval, logging and checkpoints are not part of it (``train.train`` calls them only at log steps).
- ``naive_jax``: a Python loop over seeds and steps of one jitted, buffer-donating SGD+momentum
  step (optax) of the same model with ``conv_impl="lax"`` on the default device.
- ``torch``: the same loop in PyTorch (``torch.optim.SGD`` momentum, ``--torch_threads`` threads),
  with the same architecture; at set-up the JAX init is copied into it and the logits are compared.
  ``--torch_device=cuda`` runs it on the GPU (TF32 allowed, as in JAX's default f32 precision).
- ``torch_func``: the S seeds as ONE PyTorch ensemble, as PyTorch's documentation ensembles models:
  ``torch.func.stack_module_state`` stacks the S nets' parameters, ``functional_call`` runs the net
  on one seed's slice and ``vmap(grad_and_value(loss))`` takes every seed's gradient at once (each
  seed its own batch and labels); SGD with momentum (torch.optim.SGD's update) is applied to the
  stacked parameters in place.  One arm per S, like the engine.
- ``torch_compile``: that same step (gradients and update) under ``torch.compile`` (inductor);
  compiled at set-up, which is not timed.

Every arm is compiled/warmed first; then ``--repeats`` rounds run every arm once each, in an order
that rotates from round to round (the machine is shared: compare arms of one run, as ratios).  An
arm's time is its best round; ``cpu_s_per_model_step`` is the process CPU time per model-step of
its cheapest round (a contention-robust measure of work).  ``vs_best_torch`` is a row's rate over
the best PyTorch arm's at its S (the loop's rate stands for every S, as does an ensemble's of
``--ensemble_seeds`` seeds); the top-level ``best_torch`` has, per S, that arm and the first engine
arm's ratio to it.  FLOP counts are per model-step (one
seed, one SGD step): the larger of XLA's cost analysis of the naive step and a count of the
dot/conv FLOPs in its jaxpr (``flops_source`` says which; XLA:GPU's analysis leaves out cuDNN
convolutions).  The fp32 matmul peak (a ``--peak_size``^2 matmul in jitted JAX, NumPy and torch;
the best; on a GPU, JAX alone) is measured at the start, after every round and at the end.

Usage::

    python -m benchmarks.train_throughput --model=paper_cnn --seeds=16 --steps=2 --json=/tmp/p.json
    python -m benchmarks.train_throughput --model=fig20_dense --seeds=1,8,16,64 --steps=40 \\
        --arms=engine,naive_jax,torch --json=/tmp/d.json
    # the engine against every PyTorch peer (the loop, the torch.func ensemble, compiled):
    python -m benchmarks.train_throughput --model=paper_cnn --seeds=8,16 --steps=1 \\
        --arms=engine,torch,torch_func,torch_compile --baseline_seeds=4 --ensemble_seeds=8 \\
        --json=/tmp/pt.json
    # every layout at S=8 and S=16, engine only:
    python -m benchmarks.train_throughput --model=small_cnn --seeds=8,16 --steps=2 --arms=engine \\
        --layout=vmap,unroll,map,map:im2col --json=/tmp/l.json

The JSON holds the headline (the first engine arm) as ``model_steps_per_s``, ``gflops_per_s``,
``peak_gflops_per_s`` and ``peak_fraction``, and one entry per arm under ``arms``, with its ratios
``vs_torch`` and ``vs_naive_jax`` (model-steps/s over the baseline's, same S and dtype when
measured).

Mixed precision and the roofline: ``--dtypes=float32,bfloat16`` runs the engine and naive JAX arms
in each compute dtype (``config.model.dtype``; torch stays float32).  Every row has its
``dtype`` and a ``roofline`` (benchmarks/roofline.py): the FLOPs and device-memory bytes of one
model-step in its layout and dtype, the floor max(FLOPs / peak, bytes / bandwidth) with the
matmul peak of its dtype and the copy bandwidth both measured at the start of this run (top-level
``roofline.limits``), which of the two binds, and ``fraction_of_floor`` = floor / measured time.
"""

import copy
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import output
from benchmarks import roofline
from experiments import host_devices
from rl_align import machine
from rl_align import models
from rl_align import seeds as seeds_lib
from rl_align.engine import config as engine_config
from rl_align.engine import programs as engine_programs
from rl_align.engine import layout as engine_layout

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "paper_cnn", ["paper_cnn", "fig20_dense", "small_cnn"], "Workload.")
flags.DEFINE_list(
  "seeds", ["16"], "Numbers of seeds S (comma list); one engine arm per S and layout."
)
flags.DEFINE_integer("steps", 2, "SGD steps per seed per timed round, for every arm.")
flags.DEFINE_list(
  "arms",
  ["engine", "naive_jax", "torch"],
  "Arms: engine, naive_jax, torch, torch_func, torch_compile (the module docstring).",
)
flags.DEFINE_list(
  "layout",
  ["auto"],
  "Engine layouts (comma list): a member lift auto, vmap, "
  "unroll or map; append ':lax', ':im2col', ':fused' or ':pallas' to set the conv "
  "models' conv_impl (e.g. map:fused; without it: the model's own, auto for auto), "
  "'@D' to use only the "
  "first D devices (e.g. map@1) and '/M' for gradient micro-batches of M "
  "examples (e.g. auto/8; /B with B the batch: none).",
)
flags.DEFINE_integer("repeats", 2, "Timed rounds; an arm's time is its best round.")
flags.DEFINE_integer(
  "baseline_seeds",
  16,
  "The per-seed loops (naive_jax, torch) run min(S, this) "
  "seeds: their model-steps/s does not depend on S.",
)
flags.DEFINE_integer(
  "ensemble_seeds",
  0,
  "The PyTorch ensembles (torch_func, torch_compile) run "
  "min(S, this) seeds (0: S). Their vmapped activations take memory per seed "
  "(the paper CNN: ~1 GB per seed at batch 256), while their model-steps/s "
  "changes little with S once each seed's work is large.",
)
flags.DEFINE_integer("batch_size", 0, "Override the workload's batch size (0: the paper's).")
flags.DEFINE_integer("num_examples", 0, "Training set size (0: 8 batches).")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: the number of usable cores).")
flags.DEFINE_enum(
  "torch_device",
  "cpu",
  ["cpu", "cuda"],
  "Device of the torch arm. With cuda, "
  "TF32 matmuls are allowed, as JAX's default float32 precision does on GPU.",
)
flags.DEFINE_integer("peak_size", 4096, "Side of the square fp32 matmul that measures the peak.")
flags.DEFINE_list(
  "dtypes",
  ["float32"],
  "Compute dtypes of the engine and naive JAX arms "
  "(config.model.dtype): float32 and/or bfloat16, side by side.",
)
flags.DEFINE_integer(
  "bandwidth_mb",
  0,
  "Size of the copy that measures the memory bandwidth "
  "for the roofline (0: 256 MB on CPU, 2048 MB on accelerators).",
)
flags.DEFINE_string("json", None, "Write the results here (JSON).")

ARMS = ("engine", "naive_jax", "torch", "torch_func", "torch_compile")
TORCH_ARMS = ("torch", "torch_func", "torch_compile")

# name -> (model constructor kwargs, input shape without batch, batch size, classes).
WORKLOADS: dict[str, dict[str, Any]] = {
  "fig20_dense": {
    "model": {"name": "dense", "widths": (2048, 256), "num_classes": 10},
    "input": (30,),
    "batch": 128,
  },
  "paper_cnn": {
    "model": {
      "name": "paper_cnn",
      "features": 256,
      "kernel_size": 3,
      "hidden": 64,
      "num_classes": 10,
    },
    "input": (32, 32, 3),
    "batch": 256,
  },
  "small_cnn": {
    "model": {"name": "small_cnn", "features": (32, 64), "num_classes": 10},
    "input": (32, 32, 3),
    "batch": 128,
  },
}
LEARNING_RATE, MOMENTUM = 0.01, 0.9


# ----------------------------------------------------------------------------------------------
# Peak and FLOPs.


def matmul_peak(n: int = 4096, reps: int = 3) -> dict[str, float]:
  """Best fp32 GFLOP/s of an n x n matmul in jitted JAX, NumPy and (if installed) torch.

  On an accelerator backend only JAX's matmul on the default device is measured (at XLA's default
  float32 precision, which uses TF32 tensor cores on NVIDIA Ampere and later): the host's CPUs
  are not where the engine runs.
  """
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
  out = {}

  def best(fn):
    fn()
    times = []
    for _ in range(reps):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9

  ja, jb = jnp.asarray(a), jnp.asarray(b)
  mm = jax.jit(jnp.matmul)
  out["jax"] = best(lambda: mm(ja, jb).block_until_ready())
  if jax.default_backend() != "cpu":
    return out
  out["numpy"] = best(lambda: a @ b)
  torch = _torch()
  if torch is not None:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["torch"] = best(lambda: ta @ tb)
  return out


def _cost_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", 0.0)) if cost else 0.0


# ----------------------------------------------------------------------------------------------
# The same model in PyTorch.


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top

    return torch
  except ImportError:
    return None


def torch_model(name: str, kw: dict[str, Any]):
  """The PyTorch twin of the workload's Flax model (NCHW; layer order = Flax's layer_names)."""
  torch = _torch()
  tnn = torch.nn
  if name == "fig20_dense":
    layers, d = [tnn.Flatten()], WORKLOADS[name]["input"][0]
    for w in kw["widths"]:
      layers += [tnn.Linear(d, w), tnn.ReLU()]
      d = w
    return tnn.Sequential(*layers, tnn.Linear(d, kw["num_classes"]))
  if name == "paper_cnn":
    k, f = kw["kernel_size"], kw["features"]
    side = WORKLOADS[name]["input"][0] - k + 1
    return tnn.Sequential(
      tnn.Conv2d(3, f, k),
      tnn.ReLU(),
      tnn.Flatten(),
      tnn.Linear(f * side * side, kw["hidden"]),
      tnn.ReLU(),
      tnn.Linear(kw["hidden"], kw["num_classes"]),
    )
  layers, c = [], 3
  for f in kw["features"]:
    layers += [tnn.Conv2d(c, f, 3, padding=1), tnn.ReLU()]
    c = f
  return tnn.Sequential(
    *layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, kw["num_classes"])
  )


def copy_params_to_torch(tmodel, params, input_shape) -> None:
  """Loads Flax params (layer_names order) into the torch twin, fixing the flatten order."""
  torch = _torch()
  with_weights = [m for m in tmodel if hasattr(m, "weight")]
  names = models.layer_names(params)
  assert len(names) == len(with_weights), (names, tmodel)
  shape = tuple(input_shape)  # running NHWC shape without batch, to permute the flatten
  for name, m in zip(names, with_weights):
    k, b = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
    if k.ndim == 4:  # [k, k, C, F] -> [F, C, k, k]
      w = k.transpose(3, 2, 0, 1)
      pad = m.padding[0]
      side = shape[0] + 2 * pad - k.shape[0] + 1
      shape = (side, side, k.shape[-1])
    else:  # [in, out] -> [out, in]
      if len(shape) == 3 and k.shape[0] == np.prod(shape):  # flatten of (H, W, C) vs (C, H, W)
        h, wd, c = shape
        k = k.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(k.shape)
      w = k.T
      shape = (k.shape[-1],)
    with torch.no_grad():
      m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
      m.bias.copy_(torch.from_numpy(np.array(b)))


# ----------------------------------------------------------------------------------------------
# Arms.  Each has setup() (compile / warm up; returns setup seconds) and run() (one timed round).


def _data(model_name: str, batch: int, n: int, seeds: int):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n,) + tuple(WORKLOADS[model_name]["input"]), dtype=np.float32)
  labels = seeds_lib.random_labels(0, range(seeds), n, 10)
  return x, labels


class EngineArm:
  """rl_align.train's compiled chunk: `steps` steps of every seed per round."""

  arm = "engine"

  def __init__(
    self,
    model,
    x,
    labels,
    seeds: int,
    layout: str,
    batch: int,
    steps: int,
    devices: int = 0,
    microbatch: int = 0,
  ):
    cfg = engine_config.default_config()
    cfg.optimizer, cfg.learning_rate, cfg.momentum = "momentum", LEARNING_RATE, MOMENTUM
    cfg.num_seeds, cfg.batch_size = seeds, batch
    lift, _, impl = layout.partition(":")
    own = getattr(model, "conv_impl", None) if lift != "auto" else None
    cfg.member_lift, cfg.conv_impl = lift, impl or own or "auto"
    cfg.num_steps, cfg.grad_microbatch = 10**6, microbatch
    self.cfg, self.model, self.x, self.labels = cfg, model, x, labels
    self.seeds, self.steps, self.requested_layout = seeds, steps, layout
    self.layout, self.devices = "", devices

  def setup(self) -> float:
    t = time.perf_counter()
    cfg, x = self.cfg, self.x
    cfg.num_devices = self.devices  # 0: the engine's choice (engine_layout.choose_devices)
    eng = engine_programs.Engine(self.model, cfg, x.shape, self.seeds)
    self.eng, self.layout = eng, eng.layout.name
    if self.devices:
      self.layout += f"@{eng.mesh.size}"
    if eng.microbatch < cfg.batch_size:
      self.layout += f"/{eng.microbatch}"
    members = seeds_lib.Members.of(cfg).padded(eng.m_pad)
    self.state = eng.initial_state(members)
    self.inputs = eng.put_inputs(members, x, self.labels)
    self.t = 0
    self._advance(1)
    return time.perf_counter() - t

  def _advance(self, n: int) -> None:
    self.state, loss, _ = self.eng.chunk(
      self.state, self.inputs, np.int32(self.t), np.int32(self.t + n)
    )
    jax.block_until_ready((self.state, loss))
    self.t += n
    self.last_loss = float(np.nanmean(np.asarray(loss)))

  def run(self) -> None:
    self._advance(self.steps)

  def model_steps(self) -> int:
    return self.seeds * self.steps

  def close(self) -> None:
    self.state = self.eng = None


def naive_step_fn(model):
  """One jitted SGD+momentum step of one seed: (params, opt, x_all, y_all, idx) -> same."""
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)

  def step(params, opt_state, x_all, y_all, idx):
    xb, yb = x_all[idx], y_all[idx]

    def loss_fn(p):
      logits = model.apply({"params": p}, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx, step


class NaiveJaxArm:
  """for seed: for step: jitted_step(...) on the default device, conv_impl="lax"."""

  arm, layout, requested_layout = "naive_jax", "", ""

  def __init__(self, model, x, labels, seeds: int, batch: int, steps: int):
    self.model, self.x, self.labels = model, x, labels
    self.seeds, self.batch, self.steps = seeds, batch, steps

  def setup(self) -> float:
    t = time.perf_counter()
    tx, step = naive_step_fn(self.model)
    self.step = jax.jit(step, donate_argnums=(0, 1))
    dev = jax.devices()[0]
    self.x_d = jax.device_put(self.x, dev)
    self.y_d = [jax.device_put(self.labels[s], dev) for s in range(self.seeds)]
    rng = np.random.default_rng(1)
    n = len(self.x)
    self.idx = [
      [
        jax.device_put(rng.permutation(n)[: self.batch].astype(np.int32), dev)
        for _ in range(self.steps)
      ]
      for _ in range(self.seeds)
    ]
    init = jax.jit(lambda k: self.model.init(k, jnp.zeros((1,) + self.x.shape[1:]))["params"])
    self.params = [init(seeds_lib.seed_key(0, s, seeds_lib.INIT_STREAM)) for s in range(self.seeds)]
    self.opt = [tx.init(p) for p in self.params]
    self.run()
    return time.perf_counter() - t

  def run(self) -> None:
    losses = []
    for s in range(self.seeds):
      for t in range(self.steps):
        self.params[s], self.opt[s], loss = self.step(
          self.params[s], self.opt[s], self.x_d, self.y_d[s], self.idx[s][t]
        )
      losses.append(loss)
    jax.block_until_ready((self.params, losses))
    self.last_loss = float(np.mean([float(l) for l in losses]))

  def model_steps(self) -> int:
    return self.seeds * self.steps

  def close(self) -> None:
    self.params = self.opt = None


def _torch_on(device: str, threads: int):
  """torch, with `threads` CPU threads; on "cuda" checked and with TF32 allowed (as JAX's default
  float32 precision on a GPU)."""
  torch = _torch()
  torch.set_num_threads(threads)
  if device == "cuda":
    if not torch.cuda.is_available():
      raise app.UsageError(
        "--torch_device=cuda but torch sees no CUDA device. Fix: use "
        "--torch_device=cpu, or a CUDA build of torch on a GPU machine."
      )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  return torch


class TorchArm:
  """for seed: for step: zero_grad, forward, cross_entropy, backward, SGD(momentum).step()."""

  arm, layout, requested_layout = "torch", "", ""

  def __init__(
    self,
    model_name,
    kw,
    jax_model,
    x,
    labels,
    seeds: int,
    batch: int,
    steps: int,
    threads: int,
    device: str = "cpu",
  ):
    self.model_name, self.kw, self.jax_model = model_name, kw, jax_model
    self.x, self.labels, self.seeds, self.batch, self.steps = x, labels, seeds, batch, steps
    self.threads, self.device = threads, device
    self.max_logit_diff = float("nan")

  def setup(self) -> float:
    torch = _torch_on(self.device, self.threads)
    t = time.perf_counter()
    x = self.x if self.x.ndim == 2 else self.x.transpose(0, 3, 1, 2)
    dev = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
    self.x_t = dev(x)
    self.y_t = [dev(self.labels[s].astype(np.int64)) for s in range(self.seeds)]
    rng = np.random.default_rng(1)
    n = len(self.x)
    self.idx = [
      [dev(rng.permutation(n)[: self.batch]) for _ in range(self.steps)] for _ in range(self.seeds)
    ]
    self.nets, self.opts = [], []
    for s in range(self.seeds):
      torch.manual_seed(s)
      net = torch_model(self.model_name, self.kw).to(self.device)
      self.nets.append(net)
      self.opts.append(torch.optim.SGD(net.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM))
    self.max_logit_diff = self._check_same_model()
    self.run()
    return time.perf_counter() - t

  def _check_same_model(self) -> float:
    """Copies one JAX init into a fresh torch twin; max |logits difference| on 4 examples."""
    torch = _torch()
    params = self.jax_model.init(jax.random.key(0), jnp.asarray(self.x[:1]))["params"]
    net = torch_model(self.model_name, self.kw)
    copy_params_to_torch(net, params, self.x.shape[1:])
    ref = np.asarray(self.jax_model.apply({"params": params}, jnp.asarray(self.x[:4])))
    with torch.no_grad():
      got = net(self.x_t[:4].cpu()).numpy()
    return float(np.max(np.abs(ref - got)))

  def run(self) -> None:
    torch = _torch()
    f = torch.nn.functional
    losses = []
    for s in range(self.seeds):
      net, opt = self.nets[s], self.opts[s]
      for t in range(self.steps):
        idx = self.idx[s][t]
        opt.zero_grad(set_to_none=True)
        loss = f.cross_entropy(net(self.x_t[idx]), self.y_t[s][idx])
        loss.backward()
        opt.step()
      losses.append(float(loss.detach()))
    self.last_loss = float(np.mean(losses))

  def model_steps(self) -> int:
    return self.seeds * self.steps

  def close(self) -> None:
    self.nets = self.opts = None


class TorchFuncArm:
  """The S seeds as one torch.func ensemble (`stack_module_state`, `functional_call`,
  `vmap(grad_and_value(loss))`), SGD momentum on the stacked parameters; `compiled`: that step
  under torch.compile.  Seed s starts from torch's init under `manual_seed(s)` (as the loop's)
  and draws its own batches; every step of a round is one call of the (compiled) step."""

  layout, requested_layout = "", ""

  def __init__(
    self,
    model_name,
    kw,
    x,
    labels,
    seeds: int,
    batch: int,
    steps: int,
    threads: int,
    device: str = "cpu",
    compiled: bool = False,
  ):
    self.arm = "torch_compile" if compiled else "torch_func"
    self.model_name, self.kw, self.x, self.labels = model_name, kw, x, labels
    self.seeds, self.batch, self.steps, self.threads = seeds, batch, steps, threads
    self.device, self.compiled = device, compiled

  def setup(self) -> float:
    torch = _torch_on(self.device, self.threads)
    t = time.perf_counter()
    x = self.x if self.x.ndim == 2 else self.x.transpose(0, 3, 1, 2)
    dev = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
    self.x_t = dev(x)
    self.y_t = dev(self.labels[: self.seeds].astype(np.int64))  # [S, N]
    rng = np.random.default_rng(1)
    n = len(self.x)
    self.idx = [
      dev(np.stack([rng.permutation(n)[: self.batch] for _ in range(self.seeds)]))
      for _ in range(self.steps)
    ]  # [S, B] per step
    nets = []
    for s in range(self.seeds):
      torch.manual_seed(s)
      nets.append(torch_model(self.model_name, self.kw).to(self.device))
    self.step = ensemble_step(nets, compiled=self.compiled)
    params, buffers = torch.func.stack_module_state(nets)
    self.params = {k: v.detach() for k, v in params.items()}
    self.buffers = buffers
    self.momenta = {k: torch.zeros_like(v) for k, v in self.params.items()}
    self.run()  # compiles (torch_compile) and warms up
    return time.perf_counter() - t

  def run(self) -> None:
    torch = _torch()
    for t in range(self.steps):
      idx = self.idx[t]
      loss = self.step(
        self.params,
        self.buffers,
        self.momenta,
        self.x_t[idx],
        torch.take_along_dim(self.y_t, idx, dim=1),
      )
    self.last_loss = float(loss.mean())

  def model_steps(self) -> int:
    return self.seeds * self.steps

  def close(self) -> None:
    self.params = self.buffers = self.momenta = self.step = None


def ensemble_step(
  nets, compiled: bool = False, learning_rate: float = LEARNING_RATE, momentum: float = MOMENTUM
):
  """step(params, buffers, momenta, xb [S, B, ...], yb [S, B]) -> losses [S]: one SGD-momentum
  step of the S nets (torch.optim.SGD's update: m = momentum m + g, p -= lr m, in place) on the
  parameters stacked by `torch.func.stack_module_state(nets)`, gradients by
  `vmap(grad_and_value(loss))` over `functional_call` of a stateless copy of nets[0]."""
  torch = _torch()
  func, f = torch.func, torch.nn.functional
  base = copy.deepcopy(nets[0]).to("meta")

  def loss(params, buffers, xb, yb):
    return f.cross_entropy(func.functional_call(base, (params, buffers), (xb,)), yb)

  grads_and_losses = func.vmap(func.grad_and_value(loss))

  def step(params, buffers, momenta, xb, yb):
    grads, losses = grads_and_losses(params, buffers, xb, yb)
    with torch.no_grad():
      for k, p in params.items():
        momenta[k].mul_(momentum).add_(grads[k])
        p.add_(momenta[k], alpha=-learning_rate)
    return losses

  return torch.compile(step) if compiled else step


# ----------------------------------------------------------------------------------------------
# The benchmark.


def _parse_layout(spec: str):
  """'layout[:conv_impl][@devices][/microbatch]' -> (layout, conv_impl or None, devices or 0,
  microbatch or 0); None if bad."""
  rest, _, micro = spec.partition("/")
  rest, _, dev = rest.partition("@")
  lay, _, impl = rest.partition(":")
  if lay not in ("auto",) + engine_layout.MEMBER_LIFTS or (impl and impl not in models.CONV_IMPLS):
    return None
  if any(v and not (v.isdigit() and int(v) >= 1) for v in (dev, micro)):
    return None
  return lay, impl or None, int(dev or 0), int(micro or 0)


def _parse_seeds(values) -> list[int]:
  seeds = [int(v) for v in values]
  if not seeds or min(seeds) < 1:
    raise app.UsageError(f"--seeds must be positive integers, got {values}.")
  return seeds


def run_benchmark(
  model_name: str,
  seeds: list[int],
  steps: int,
  arms: list[str],
  layouts: list[str],
  repeats: int = 2,
  baseline_seeds: int = 16,
  batch_size: int = 0,
  num_examples: int = 0,
  torch_threads: int = 0,
  peak_size: int = 4096,
  torch_device: str = "cpu",
  log: Callable[[str], None] = print,
  dtypes=("float32",),
  bandwidth_mb: int = 0,
  ensemble_seeds: int = 0,
) -> dict[str, Any]:
  """Sets up every arm, times `repeats` interleaved rounds and returns the results dict."""
  t_start, load_start = time.perf_counter(), os.getloadavg()[0]
  bad = [a for a in arms if a not in ARMS]
  if bad:
    raise app.UsageError(f"--arms has unknown arms {bad}; choose from {ARMS}.")
  bad = [l for l in layouts if _parse_layout(l) is None]
  if bad:
    lifts = ("auto",) + engine_layout.MEMBER_LIFTS
    raise app.UsageError(
      f"--layout has unknown layouts {bad}; choose from {lifts}, each with an "
      "optional ':conv_impl'."
    )
  if steps < 1 or repeats < 1:
    raise app.UsageError("--steps and --repeats must be >= 1.")
  bad = [d for d in dtypes if d not in models.DTYPES]
  if bad or not dtypes:
    raise app.UsageError(f"--dtypes has unknown dtypes {bad}; choose from {models.DTYPES}.")
  torch_arms = [a for a in arms if a in TORCH_ARMS]
  if torch_arms and _torch() is None:
    raise app.UsageError(
      f"--arms has {','.join(torch_arms)} but PyTorch is not installed. Fix: "
      'pip install -e ".[bench]" (torch==2.13.0), or drop them from --arms.'
    )
  spec = WORKLOADS[model_name]
  kw = dict(spec["model"])
  batch = batch_size or spec["batch"]
  bad = [l for l in layouts if batch % (_parse_layout(l)[3] or batch)]
  if bad:
    raise app.UsageError(f"--layout {bad}: a micro-batch must divide the batch size {batch}.")
  n = num_examples or 8 * batch
  model = models.build(kw)
  kw.pop("name")
  x, labels = _data(model_name, batch, n, max(seeds))
  threads = torch_threads or (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  )

  peaks = [matmul_peak(peak_size)]
  log(f"fp32 matmul peak (start): {peaks[0]}")
  limits = measure_limits(dtypes, peak_size, bandwidth_mb, log)

  # FLOPs of one model-step (one seed, one SGD step, conv_impl="lax").
  tx, step = naive_step_fn(model)
  p0 = jax.jit(lambda k: model.init(k, jnp.zeros((1,) + x.shape[1:]))["params"])(jax.random.key(0))
  args = (
    p0,
    tx.init(p0),
    jnp.asarray(x),
    jnp.asarray(labels[0]),
    jnp.arange(batch, dtype=jnp.int32),
  )
  xla_flops = _cost_flops(jax.jit(step).lower(*args).compile())
  jaxpr_flops = roofline.dot_conv_flops(jax.make_jaxpr(step)(*args).jaxpr)
  # XLA:GPU's cost analysis leaves out convolutions that run as cuDNN custom calls (the paper
  # CNN: 7.9 vs 29.0 GFLOP, the small CNN: 0.06 vs 14.9): take the larger of the two counts.
  flops = max(xla_flops, jaxpr_flops)
  n_params = int(sum(np.prod(a.shape) for a in jax.tree.leaves(p0)))
  del p0, args
  log(
    f"{model_name}: {n_params} params, batch {batch}, {flops / 1e9:.3f} GFLOP per model-step "
    f"(XLA cost analysis; dot+conv count {jaxpr_flops / 1e9:.3f})"
  )

  todo = []
  for s, dt in ((s, dt) for s in seeds for dt in dtypes):
    if "engine" in arms:
      for req in layouts:
        lay, impl, n_dev, micro = _parse_layout(req)
        m = model.clone(dtype=dt)
        if impl and models.is_conv_model(model):
          m = m.clone(conv_impl=impl)
        todo.append(
          EngineArm(
            m, x, labels[:s], s, f"{lay}:{impl}" if impl else lay, batch, steps, n_dev, micro
          )
        )
        todo[-1].requested_layout, todo[-1].dtype = req, dt
    bs = min(s, baseline_seeds) if baseline_seeds > 0 else s
    if "naive_jax" in arms:
      todo.append(NaiveJaxArm(model.clone(dtype=dt), x, labels, bs, batch, steps))
      todo[-1].requested_seeds, todo[-1].dtype = s, dt
    if "torch" in arms and dt == dtypes[0]:
      todo.append(
        TorchArm(model_name, kw, model, x, labels, bs, batch, steps, threads, torch_device)
      )
      todo[-1].requested_seeds = s
    es = min(s, ensemble_seeds) if ensemble_seeds > 0 else s
    for arm in ("torch_func", "torch_compile"):
      if arm in arms and dt == dtypes[0]:  # an ensemble: its rate depends on S (as the engine)
        todo.append(
          TorchFuncArm(
            model_name,
            kw,
            x,
            labels,
            es,
            batch,
            steps,
            threads,
            torch_device,
            compiled=arm == "torch_compile",
          )
        )
        todo[-1].requested_seeds = s
  # A per-seed loop with the same number of seeds is set up once and shared by every S.
  arms_list, shared = [], {}
  for a in todo:
    key = (a.arm, a.seeds, getattr(a, "dtype", "float32")) if a.arm != "engine" else id(a)
    if key in shared:
      shared[key].also_for.append(getattr(a, "requested_seeds", a.seeds))
      continue
    a.also_for = [getattr(a, "requested_seeds", a.seeds)]
    shared[key] = a
    arms_list.append(a)

  for a in arms_list:
    a.setup_s = a.setup()
    extra = f" layout={a.layout}" if a.arm == "engine" else ""
    log(f"set up {a.arm} S={a.seeds}{extra}: {a.setup_s:.1f} s (compile + 1 warm-up round/step)")
  rounds = {id(a): [] for a in arms_list}
  cpu = {id(a): [] for a in arms_list}
  for r in range(repeats):
    k = r % len(arms_list)
    order = arms_list[k:] + arms_list[:k] if r % 2 == 0 else (arms_list[k:] + arms_list[:k])[::-1]
    for a in order:
      t, c = time.perf_counter(), time.process_time()
      a.run()
      rounds[id(a)].append(time.perf_counter() - t)
      cpu[id(a)].append(time.process_time() - c)
    peaks.append(matmul_peak(peak_size, reps=1))
    log(f"round {r + 1}/{repeats} done; matmul peak {max(peaks[-1].values()):.0f} GFLOP/s")
  peaks.append(matmul_peak(peak_size))
  log(f"fp32 matmul peak (end): {peaks[-1]}")
  peak = max(max(p.values()) for p in peaks)

  rows = []
  for a in arms_list:
    best = min(rounds[id(a)])
    msps = a.model_steps() / best
    row = {
      "arm": a.arm,
      "seeds": a.seeds,
      "for_seeds": sorted(set(a.also_for)),
      "layout": a.layout,
      "requested_layout": a.requested_layout,
      "steps": a.steps,
      "rounds_s": [round(v, 4) for v in rounds[id(a)]],
      "best_s": best,
      "median_s": statistics.median(rounds[id(a)]),
      "setup_s": a.setup_s,
      "model_steps_per_s": msps,
      "s_per_model_step": 1.0 / msps,
      "cpu_s_per_model_step": min(cpu[id(a)]) / a.model_steps(),
      "gflops_per_s": msps * flops / 1e9,
      "peak_fraction": msps * flops / 1e9 / peak,
      "last_loss": a.last_loss,
    }
    row.update(roofline_fields(a, msps, model, x.shape[1:], batch, n_params, flops, limits))
    if a.arm in TORCH_ARMS:
      row["torch_threads"] = a.threads
      row["torch_device"] = a.device
    if a.arm == "torch":
      row["max_logit_diff_vs_jax"] = a.max_logit_diff
    rows.append(row)
    a.close()

  def baseline(arm, s, dtype):
    cands = [r for r in rows if r["arm"] == arm and r["dtype"] in (dtype, "float32")]
    cands.sort(key=lambda r: r["dtype"] != dtype)  # the same dtype first (torch: float32)
    same = [r for r in cands if s in r["for_seeds"]]
    return (same or cands or [None])[0]

  def best_torch(s):
    """The fastest PyTorch row at S = s (the loop's rate stands for every S)."""
    cands = [r for r in rows if r["arm"] in TORCH_ARMS and s in r["for_seeds"]]
    return max(cands, key=lambda r: r["model_steps_per_s"], default=None)

  for row in rows:
    for arm in ("torch", "naive_jax"):
      b = baseline(arm, row["seeds"], row["dtype"])
      row[f"vs_{arm}"] = row["model_steps_per_s"] / b["model_steps_per_s"] if b else None
    b = best_torch(row["for_seeds"][0])  # a shared loop or ensemble: at the first S it serves
    row["vs_best_torch"] = row["model_steps_per_s"] / b["model_steps_per_s"] if b else None

  engine_rows = [r for r in rows if r["arm"] == "engine"]
  best = {}
  for s in seeds:
    b = best_torch(s)
    e = next((r for r in engine_rows if r["seeds"] == s), None)
    if b is not None:
      best[str(s)] = {
        "arm": b["arm"],
        "seeds": b["seeds"],
        "model_steps_per_s": b["model_steps_per_s"],
        "engine_layout": e["layout"] if e else None,
        "engine_model_steps_per_s": e["model_steps_per_s"] if e else None,
        "engine_vs_best_torch": (e["model_steps_per_s"] / b["model_steps_per_s"] if e else None),
      }
  head = (engine_rows or rows)[0]
  return {
    "model": model_name,
    "model_steps_per_s": head["model_steps_per_s"],
    "gflops_per_s": head["gflops_per_s"],
    "peak_gflops_per_s": peak,
    "peak_fraction": head["peak_fraction"],
    "headline": {k: head[k] for k in ("arm", "seeds", "layout")},
    "flops_per_model_step": flops,
    "flops_source": "xla_cost_analysis" if xla_flops >= jaxpr_flops else "jaxpr_dot_conv_count",
    "xla_cost_analysis_flops_per_model_step": xla_flops,
    "jaxpr_dot_conv_flops_per_model_step": jaxpr_flops,
    "batch_size": batch,
    "num_examples": n,
    "num_params": n_params,
    "steps": steps,
    "repeats": repeats,
    "timing": "best round",
    "peaks": peaks,
    "roofline": {
      "limits": limits,
      "flops_per_model_step": flops,
      "activation_elements": roofline.activation_elements(model, x.shape[1:]),
      "patch_elements": roofline.patch_elements(model, x.shape[1:]),
      "activation_passes": roofline.ACTIVATION_PASSES,
      "patch_passes": roofline.PATCH_PASSES,
    },
    "arms": rows,
    "best_torch": best,
    "env": {
      "jax": jax.__version__,
      "torch": getattr(_torch(), "__version__", None),
      "devices": [str(d) for d in jax.devices()],
      "cpu": platform.processor() or platform.machine(),
      "cpu_model": machine.cpu_model(),
      "usable_cores": threads,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "python": sys.version.split()[0],
      "loadavg_1min_start_end": [load_start, os.getloadavg()[0]],
    },
    "wall_s": time.perf_counter() - t_start,
  }


# ----------------------------------------------------------------------------------------------
# The roofline (benchmarks/roofline.py): the device's limits, measured in this run, and each
# row's floor.


def measure_limits(
  dtypes, peak_size: int, bandwidth_mb: int = 0, log: Callable[[str], None] = print
) -> dict[str, Any]:
  """The default device's matmul peak per dtype (an n x n matmul in jitted JAX, n = peak_size;
  bfloat16 at most 1024 on CPU, where XLA emulates it slowly) and its memory bandwidth (a copy
  of bandwidth_mb MB; 0: 256 on CPU, 2048 on accelerators), timed now."""
  on_cpu = jax.default_backend() == "cpu"
  mb = bandwidth_mb or (256 if on_cpu else 2048)
  peaks = {}
  for dt in dict.fromkeys(("float32",) + tuple(dtypes)):
    n = min(peak_size, 1024) if on_cpu and dt != "float32" else peak_size
    peaks[dt] = roofline.measure_matmul_peak(n, dt)
  bw = roofline.measure_bandwidth(mb * 2**20)
  log(
    "roofline limits: matmul peak "
    + ", ".join(f"{dt} {v / 1e12:.2f} TFLOP/s" for dt, v in peaks.items())
    + f"; bandwidth {bw / 1e9:.0f} GB/s ({mb} MB copy)"
  )
  return {
    "peak_flops_per_s": peaks,
    "bandwidth_bytes_per_s": bw,
    "bandwidth_copy_mb": mb,
    "matmul_size": peak_size,
  }


def roofline_fields(
  arm,
  model_steps_per_s: float,
  model,
  input_shape,
  batch: int,
  n_params: int,
  flops: float,
  limits: dict[str, Any],
) -> dict[str, Any]:
  """{"dtype", "roofline"} of one arm's row: its bytes per model-step (the arm's dtype; im2col
  patches for conv-as-matmul models; no paper-CNN conv activation for the fused blocks), the floor
  at its dtype's peak and the measured bandwidth, and its fraction of that floor."""
  dtype = getattr(arm, "dtype", "float32")
  eng = getattr(arm, "eng", None)
  impl = getattr(eng.model if eng is not None else model, "conv_impl", None)
  if arm.arm in TORCH_ARMS:
    impl = "lax" if impl else None
  acts = roofline.activation_elements(model, input_shape)
  if impl in ("fused", "pallas") and isinstance(model, models.PaperCNN):
    acts.pop(models.sort_layers(acts)[0], None)  # the conv output: kept on chip / in cache
  patches = (
    roofline.patch_elements(model, input_shape) if impl in ("im2col", "fused", "pallas") else 0
  )
  n_bytes = roofline.step_bytes(
    n_params,
    batch,
    int(np.prod(input_shape)),
    sum(acts.values()),
    act_bytes=jnp.dtype(dtype).itemsize,
    opt_slots=1,
    patch_elements=patches,
  )
  return {
    "dtype": dtype,
    "roofline": roofline.row(
      1.0 / model_steps_per_s,
      flops,
      n_bytes,
      limits["peak_flops_per_s"][dtype],
      limits["bandwidth_bytes_per_s"],
    ),
  }


def format_table(res: dict[str, Any]) -> str:
  lines = [
    f"{res['model']}: {res['flops_per_model_step'] / 1e9:.3f} GFLOP/model-step "
    f"({res['flops_source']}), peak {res['peak_gflops_per_s']:.0f} GFLOP/s",
    f"{'arm':13s} {'S':>4s} {'layout':11s} {'dtype':8s} {'model-steps/s':>13s} "
    f"{'s/model-step':>12s} {'GFLOP/s':>8s} {'%peak':>6s} {'%floor':>6s} {'bound':6s} "
    f"{'vs torch':>8s} {'vs best':>8s} {'vs naive':>8s} {'setup s':>8s} {'cpu s/ms':>8s}",
  ]
  fmt = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8s}"
  for r in res["arms"]:
    roof = r["roofline"]
    lines.append(
      f"{r['arm']:13s} {r['seeds']:4d} {r['layout'] or '-':11s} {r['dtype']:8s} "
      f"{r['model_steps_per_s']:13.3f} {r['s_per_model_step']:12.4f} "
      f"{r['gflops_per_s']:8.1f} {100 * r['peak_fraction']:6.1f} "
      f"{100 * roof['fraction_of_floor']:6.1f} {roof['bound']:6s} "
      f"{fmt(r['vs_torch'])} {fmt(r['vs_best_torch'])} {fmt(r['vs_naive_jax'])} "
      f"{r['setup_s']:8.1f} {r['cpu_s_per_model_step']:8.4f}"
    )
  for s, b in res.get("best_torch", {}).items():
    if b["engine_vs_best_torch"] is not None:
      lines.append(
        f"S={s}: engine ({b['engine_layout']}) {b['engine_model_steps_per_s']:.3f} vs "
        f"the best PyTorch arm ({b['arm']}) {b['model_steps_per_s']:.3f} model-steps/s: "
        f"{b['engine_vs_best_torch']:.2f}x"
      )
  return "\n".join(lines)


def main(argv):
  host_devices.expose_host_cores()  # before any device use: one XLA host device per core
  try:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments {argv[1:]}")
    res = run_benchmark(
      FLAGS.model,
      _parse_seeds(FLAGS.seeds),
      FLAGS.steps,
      FLAGS.arms,
      FLAGS.layout,
      FLAGS.repeats,
      FLAGS.baseline_seeds,
      FLAGS.batch_size,
      FLAGS.num_examples,
      FLAGS.torch_threads,
      FLAGS.peak_size,
      FLAGS.torch_device,
      log=lambda s: print(s, flush=True),
      dtypes=FLAGS.dtypes,
      bandwidth_mb=FLAGS.bandwidth_mb,
      ensemble_seeds=FLAGS.ensemble_seeds,
    )
  except app.UsageError as e:  # a bad flag value or a missing extra: one line, exit 2 (no usage)
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
    sys.exit(2)
  print(format_table(res), flush=True)
  if FLAGS.json:
    output.emit(res, FLAGS.json, echo=False)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
