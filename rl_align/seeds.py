"""Seeds, members and random labels: where every per-member random draw of a run comes from.

A run trains *members*; member m is seed id `ids[m]` of root seed `roots[m]` (`Members`).  Each has
three independent streams, derived with ``fold_in`` from (root seed, seed id) alone, so a member
draws the same numbers whether it trains alone or packed with others::

    seeds.seed_key(root, seed_id, seeds.INIT_STREAM)    # the model's init
    seeds.seed_key(root, seed_id, seeds.DATA_STREAM)    # the example order, fold_in(key, epoch)
    seeds.seed_key(root, seed_id, seeds.LABEL_STREAM)   # the random labels

    labels = seeds.random_labels(root, seeds.seed_ids(cfg), n, num_classes)   # [S, n] int32
    seeds.random_labels(root, [3], None, num_classes, idx=idx)   # == labels of seed 3 at idx

`draw_labels` is the one uniform-label draw (``jax.random.randint(key, (n,), 0, K)`` per key);
`random_labels` gives it the members' label keys (the one label draw of rl_align), and the
host pipeline evaluates it at the indices of a batch only (`idx`, O(|idx|) work, no [N] row).

Random labels at indices, exactly.  With the default partitionable threefry
(`jax_threefry_partitionable`, on since jax 0.5), randint splits its key into k1, k2 and takes 32
random bits per element, element i's bits being the threefry hash of the counter (0, i) under the
key, XOR-ed to one word.  `fold_in(k, i)` hashes the same counter (0, i) under k, so its key data
XOR-ed is element i's bits: bits_i(k) = xor(key_data(fold_in(k, i))).  randint then returns
((bits_i(k1) % K) * ((2**16 % K)**2 % K) + bits_i(k2) % K) % K in uint32.  `draw_labels(idx=...)`
evaluates that per index with public jax.random calls (split, fold_in, key_data); tests check it
against the full draw for many n, K and index sets.
"""

import contextlib
import dataclasses
import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rl_align import errors

# fold_in tags of each member's streams.
INIT_STREAM, DATA_STREAM, LABEL_STREAM = 1, 2, 3
# Engine-config fields a member of a packed sweep may carry its own value of (`Members`).
MEMBER_HPARAMS = ("learning_rate", "momentum", "weight_decay")


def seed_ids(cfg) -> list[int]:
  """The seed ids an engine config trains: seed_offset .. seed_offset + num_seeds - 1."""
  return list(range(cfg.seed_offset, cfg.seed_offset + cfg.num_seeds))


def seed_key(root_seed: int, seed_id: int, stream: int):
  """The key of one member's stream (init, data order or labels): independent of the others."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(root_seed), seed_id), stream)


# ----------------------------------------------------------------------------------------------
# Random labels.


def check_num_classes(k) -> None:
  """Raises ConfigError unless k is an integer >= 1."""
  if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
    raise errors.ConfigError(f"num_classes must be an integer >= 1, got {k!r}. Fix: e.g. 10.")


def check_prng() -> None:
  """Labels at indices need jax's default partitionable threefry (module docstring)."""
  if (
    not jax.config.jax_threefry_partitionable or jax.config.jax_default_prng_impl != "threefry2x32"
  ):
    raise errors.ConfigError(
      "per-example random labels need jax's default partitionable threefry PRNG, but "
      f"jax_threefry_partitionable={jax.config.jax_threefry_partitionable} and "
      f"jax_default_prng_impl={jax.config.jax_default_prng_impl!r}. Fix: leave both at their "
      "defaults (True, 'threefry2x32')."
    )


def _cpu():
  return jax.local_devices(backend="cpu")[0]


def _bits_at(key, idx):
  """uint32 bits of element idx (any shape) of random_bits(key, 32, (n,)), for any n > idx."""
  data = jax.vmap(lambda i: jax.random.key_data(jax.random.fold_in(key, i)))(idx.reshape(-1))
  return (data[:, 0] ^ data[:, 1]).reshape(idx.shape)


@jax.jit
def _labels_at_jit(keys, idx, num_classes):
  """randint(key_s, (n,), 0, K)[idx_s] for each row s: keys [S], idx [S, ...] uint32 -> int32."""

  def one(key, ix):
    k1, k2 = jax.random.split(key)
    span = num_classes.astype(jnp.uint32)
    mult = jnp.uint32(2**16) % span
    mult = (mult * mult) % span
    out = ((_bits_at(k1, ix) % span) * mult + _bits_at(k2, ix) % span) % span
    return out.astype(jnp.int32)

  return jax.vmap(one)(keys, idx)


def _labels_at(keys, idx, num_classes: int) -> np.ndarray:
  check_prng()
  idx = np.asarray(idx)
  if idx.shape[:1] != (len(keys),):
    raise errors.DataError(
      f"random labels: idx must be [S={len(keys)}, ...], one row per "
      f"member, got shape {idx.shape}. Fix: stack one index row per member."
    )
  if idx.size and (idx.min() < 0 or idx.max() >= 2**32):
    raise errors.DataError(
      f"random labels: indices must lie in [0, 2**32), got [{idx.min()}, "
      f"{idx.max()}]. Fix: pass example indices."
    )
  flat = idx.reshape(len(keys), -1)
  width = max(256, 1 << (flat.shape[1] - 1).bit_length())  # few shapes: few compilations
  padded = np.zeros((len(keys), width), np.uint32)
  padded[:, : flat.shape[1]] = flat
  with jax.default_device(_cpu()):
    out = _labels_at_jit(keys, padded, jnp.int32(num_classes))
  return np.asarray(out)[:, : flat.shape[1]].reshape(idx.shape)


def draw_labels(keys, num_classes: int, n: int | None = None, idx=None) -> np.ndarray:
  """int32 labels uniform in [0, num_classes), one independent draw per key of `keys` [S].

  With `n`: the whole draw, [S, n] (row s = ``jax.random.randint(keys[s], (n,), 0, K)``).  With
  `idx` [S, ...] instead: row s of that draw at the indices idx[s], for any n > max(idx), computed
  per index on the CPU (O(|idx|) work and memory; module docstring).
  """
  check_num_classes(num_classes)
  if (n is None) == (idx is None):
    raise errors.ConfigError("draw_labels: pass exactly one of n (the whole draw) and idx.")
  if idx is not None:
    return _labels_at(keys, idx, num_classes)
  draw = jax.vmap(lambda k: jax.random.randint(k, (n,), 0, num_classes, dtype=jnp.int32))
  return np.asarray(draw(keys))


def random_labels(
  root_seed: int, ids: Sequence[int], n: int | None, num_classes: int, idx=None
) -> np.ndarray:
  """[S, n] int32 uniform labels, one independent draw per seed id (fixed for the whole run);
  with `idx` [S, ...] (n may be None), the labels of row s's seed id at the indices idx[s]."""
  with contextlib.nullcontext() if idx is None else jax.default_device(_cpu()):
    keys = jnp.stack([seed_key(int(root_seed), int(s), LABEL_STREAM) for s in ids])
  return draw_labels(keys, num_classes, n=n, idx=idx)


# ----------------------------------------------------------------------------------------------
# Members.


@dataclasses.dataclass(frozen=True)
class Members:
  """Who the engine trains: member m is seed `ids[m]` of root seed `roots[m]`, with its own
  hyper-parameters (`MEMBER_HPARAMS`).  A plain run has one member per seed of its config; a
  packed sweep concatenates the members of several points (`Members.concat`).

      members = seeds.Members.of(cfg)          # cfg.num_seeds members, cfg's root seed and values
      members.keys(seeds.DATA_STREAM)          # [M, 2] uint32 key data, each member's data key
  """

  roots: tuple[int, ...]
  ids: tuple[int, ...]
  learning_rate: tuple[float, ...]
  momentum: tuple[float, ...]
  weight_decay: tuple[float, ...]

  @classmethod
  def of(cls, cfg) -> "Members":
    s = int(cfg.num_seeds)
    return cls(
      roots=(int(cfg.seed),) * s,
      ids=tuple(seed_ids(cfg)),
      **{k: (float(cfg[k]),) * s for k in MEMBER_HPARAMS},
    )

  @classmethod
  def concat(cls, parts: Sequence["Members"]) -> "Members":
    return cls(*(sum((getattr(p, f.name) for p in parts), ()) for f in dataclasses.fields(cls)))

  def __len__(self) -> int:
    return len(self.ids)

  def padded(self, m: int) -> "Members":
    """m >= len members: the padding members repeat the last one (their results are dropped)."""
    extra = m - len(self)
    return Members(*(v + v[-1:] * extra for v in dataclasses.astuple(self)))

  def keys(self, stream: int) -> np.ndarray:
    return np.stack(
      [
        np.asarray(jax.random.key_data(seed_key(r, i, stream)))
        for r, i in zip(self.roots, self.ids)
      ]
    )

  def hparams(self) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(self, k), np.float32) for k in MEMBER_HPARAMS}
