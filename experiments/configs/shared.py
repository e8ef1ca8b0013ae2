"""Pieces shared by the figure configs."""

# The embedded `photos` crops of the local CNN configs (Figs 2, 3, 4, 5): 16x16 crops of the photos
# resized to short side 128 (so a crop holds structure), cells of 24 px, fixed seed.
LOCAL_PHOTOS = {"size": 16, "short_side": 128, "cell": 24, "seed": 0}


def local_photos(n: int) -> dict:
  """config.data.kwargs of n local photo crops."""
  return dict(LOCAL_PHOTOS, n=n)
