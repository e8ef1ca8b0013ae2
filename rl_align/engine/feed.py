"""What the engine trains from in place of an array x: a host feed, and the pieces it runs.

`Feed` is the interface the engine needs from a host input pipeline (`rl_align.pipeline.HostFeed`
implements it): the engine recognises a feed by this type and never imports the pipeline.
`segments` cuts a run into the (t0, t1) pieces the compiled chunk runs, from device-resident data
or from the feed's buffers.
"""

import abc
from typing import Any, Iterator, Sequence


class Feed(abc.ABC):
  """A host input pipeline: every member's batches, computed on the host and streamed in buffers.

  Attributes the engine reads: `n` (examples), `example_shape`, `batch_size`, `data_seed` (the
  root seed of the data order), `seed_ids` (the members it serves, in row order) and `labels`.
  """

  n: int
  example_shape: tuple
  batch_size: int
  data_seed: int
  seed_ids: Sequence[int]
  labels: Any

  @abc.abstractmethod
  def head(self, m: int) -> tuple:
    """The "train" eval set: (x [m, ...] of examples 0..m-1, labels [S, m])."""

  @abc.abstractmethod
  def buffers(self, sharding, member_ids: Sequence[int], start: int, stop: int) -> Iterator[Any]:
    """Buffers (t0, t1, x [M, T, B, ...], y [M, T, B]) of one fixed length T, consecutive from step
    `start` until they cover `stop` (the last may run past it), for members `member_ids` (the
    seed id of each row of the engine's member axis), placed as global arrays with `sharding`
    (this process builds only the rows its devices hold)."""


def segments(
  feed: Feed | None, sharding, member_ids: Sequence[int], events: Sequence[int], step: int
):
  """(t0, t1, buffer, ends) pieces the engine runs from `step` on.  Device-resident data (feed
  None): one piece per event interval (buffer None, ends True).  With a host feed: the feed's
  buffers, all of one length; an event interval is one piece or, where it crosses a buffer's end,
  several (ends marks its last).  The feed's position is a pure function of the step, so the
  checkpoint's step is all a resume needs."""
  events = [e for e in events if e > step]
  if feed is None:
    t = step
    for ev in events:
      yield t, ev, None, True
      t = ev
    return
  if not events:
    return
  buffers = feed.buffers(sharding, member_ids, step, events[-1])
  buf, t = next(buffers), step
  for ev in events:
    while t < ev:
      if t >= buf.t1:
        buf = next(buffers)
      end = min(ev, buf.t1)
      yield t, end, buf, end == ev
      t = end
