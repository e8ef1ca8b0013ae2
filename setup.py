"""rl_align: reproduce and extend Maennel et al. 2020, "What do neural networks learn when trained
with random labels?" in JAX.  Install with ``pip install -e .[test]``."""

from setuptools import find_packages, setup

setup(
  name="rl_align",
  version="0.1.0",
  description="Alignment of first-layer weights with data principal components under random labels.",
  python_requires=">=3.10",
  packages=find_packages(
    include=["rl_align", "rl_align.*", "experiments", "experiments.*", "benchmarks", "benchmarks.*"]
  ),
  install_requires=[
    "jax>=0.4.30",
    "flax>=0.8",
    "optax>=0.2",
    "chex>=0.1.86",
    "orbax-checkpoint>=0.5",
    "absl-py",
    "ml_collections",
    "numpy",
    "scipy",  # Student-t and chi-square laws of the claims' intervals and floors
    "tensorflow-datasets>=4.9",
    "array_record",
    "grain",  # host input pipeline (rl_align.pipeline): threads, prefetch, order
    "matplotlib",
    "scikit-learn",  # embedded offline data: load_digits, load_sample_images
    "scikit-image",  # embedded offline data: more natural photos for the `photos` source
    "threadpoolctl",  # single-threaded BLAS per worker thread in patch covariance
    "tensorboardX",  # TensorBoard event files per member (rl_align.tensorboard), no TensorFlow
  ],
  extras_require={
    "test": [
      "pytest",
      "pytest-timeout",
      "pytest-xdist",
      "nbformat",
      "nbclient",
      "ipykernel",
      "ruff",
    ],
    # tfds.load, and preparing a downloaded dataset (data.download): TensorFlow, and
    # importlib_resources, with which tfds finds a builder's checksums.
    "tf": ["tensorflow-cpu", "importlib_resources"],
    "bench": ["torch==2.13.0"],
  },
)
