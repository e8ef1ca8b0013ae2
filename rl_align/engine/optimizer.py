"""The members' optimizer: SGD / momentum / Adam with an optax schedule, per-member values."""

from typing import Any, Mapping

from absl import logging
import optax

from rl_align import seeds


def make_optimizer(
  cfg, steps: int, hparams: Mapping[str, Any] | None = None, with_decay: bool | None = None
) -> optax.GradientTransformation:
  """SGD / momentum / Adam with an optax schedule; weight decay is L2 added to the gradient.

  `hparams` overrides the config's `learning_rate`, `momentum` and `weight_decay` with (possibly
  traced) per-member scalars: the engine builds each member's optimizer inside its step from them,
  so members of a packed sweep carry their own values.  The schedule's shape comes from the config
  and is scaled by the member's learning rate.  `with_decay` says whether the decay transform is
  part of the chain (it is whenever any member decays; a member with 0 adds 0 * params).  The
  optimizer *state* depends only on the structure, never on the values.
  """
  hp = {k: cfg[k] for k in seeds.MEMBER_HPARAMS}
  hp.update(hparams or {})
  parts = []
  if bool(cfg.weight_decay) if with_decay is None else with_decay:
    parts.append(optax.add_decayed_weights(hp["weight_decay"]))
  sched = _schedule(cfg, steps, hp["learning_rate"])
  if cfg.optimizer == "sgd":
    parts.append(optax.sgd(sched))
  elif cfg.optimizer == "momentum":
    parts.append(optax.sgd(sched, momentum=hp["momentum"], nesterov=cfg.nesterov))
  else:
    if hparams is None:  # the structural build (once per engine), not every member's trace
      logging.warning(
        "optimizer=adam breaks the rotation symmetry the paper's proposition needs: "
        "first-layer weights need not align with the data covariance."
      )
    parts.append(optax.adam(sched))
  return optax.chain(*parts)


def _schedule(cfg, steps: int, lr):
  """The config's schedule shape, scaled by the learning rate `lr`."""
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(1, steps))
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(1, cfg.warmup_steps), max(2, steps))
  bounds = {int(f * steps): cfg.step_factor for f in cfg.step_boundaries}
  return optax.piecewise_constant_schedule(lr, bounds)
