"""Image resizing shared by the sources: exact area averaging for integer factors, anti-aliased
bilinear otherwise; a result never depends on the other images of the batch.

    from rl_align.data import resize
    x16 = resize.resize_images(x_uint8, 16)       # float32 [N, 16, 16, C] in [0, 1]
"""

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from rl_align import errors
from rl_align.data.core import to_unit_float


_RESIZE_BLOCK = 64  # images per jitted resize call: a fixed shape, so each image's result is the
# same whichever batch it comes in (XLA's result depends on the batch shape)


@functools.partial(jax.jit, static_argnums=(1,))
def _resize_block(x, hw):
  out = jax.image.resize(x, (x.shape[0],) + hw + (x.shape[-1],), method="linear", antialias=True)
  return jnp.clip(out, 0.0, 1.0)


def resize_images(x: np.ndarray, image_size, chunk: int = 2048) -> np.ndarray:
  """Resizes [N, H, W, C] images to image_size (int or (h, w)) as float32; uint8 maps to [0, 1].

  Integer downscaling factors average each f x f block (area resize, exact); other sizes use
  jax.image.resize's anti-aliased bilinear filter.  Either way an image's result does not depend on
  the other images in `x` (the streaming sources resize any subset and must match).
  """
  h, w = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
  if h < 1 or w < 1:
    raise errors.ConfigError(f"image_size must be >= 1, got {image_size!r}. Fix: e.g. 32.")
  n, hin, win, c = x.shape
  if (hin, win) == (h, w):
    return to_unit_float(x)
  out = np.empty((n, h, w, c), np.float32)
  blocks = hin % h == 0 and win % w == 0
  step = chunk if blocks else _RESIZE_BLOCK
  for s in range(0, n, step):
    part = to_unit_float(x[s : s + step])
    if blocks:
      fh, fw = hin // h, win // w
      out[s : s + step] = part.reshape(len(part), h, fh, w, fw, c).mean(axis=(2, 4))
    else:
      k = len(part)
      pad = np.zeros((_RESIZE_BLOCK - k,) + part.shape[1:], np.float32)
      out[s : s + k] = np.asarray(_resize_block(np.concatenate([part, pad]), (h, w)))[:k]
  return out


def square_resize(im: np.ndarray, size: int) -> np.ndarray:
  """The central square of one uint8 [H, W, C] image, area-resized (PIL box filter) to size x size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  h, w = im.shape[:2]
  m = min(h, w)
  top, left = (h - m) // 2, (w - m) // 2
  sq = np.ascontiguousarray(im[top : top + m, left : left + m])
  if m == size:
    return sq
  pil = Image.fromarray(sq[..., 0] if sq.shape[-1] == 1 else sq)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BOX))
  return out.reshape(size, size, im.shape[-1])
