"""`download=True` / `--config.data.download=True`: a missing tfds dataset is downloaded and
prepared in data_dir (rl_align/data/tfds_source.py), tested without any network.

The real builders download from the dataset's hosts; here a stand-in builder takes their place
(`tfds_source.make_builder` is the one factory the download path uses): a subclass of the
registered tfds builder (same name, version and features, so the registered builder reads what it
wrote) whose "download" makes a few deterministic PNG images (PIL, so TensorFlow is not needed)
and writes them through tfds's own `download_and_prepare` as ArrayRecord.  It is read back through
the data loaders (`data.load`, `data.source`, the runners' `load_splits` of a paper config
parsed with --config.data.download=True).  Failures: a builder that fails midway (in tfds's
generation, or after writing a folder that looks prepared), hosts that refuse or never answer
(loopback ports and a stand-in resolver), missing packages: each one line naming the dataset and
the fix, and nothing a later run reads.
"""

import io
import json
import os
import socket
import threading

import ml_collections
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from rl_align import data
from rl_align import errors
from rl_align.data import idx
from rl_align.data import tfds_source

SIZES = {"train": 12, "test": 4}


def _pixel(split: str, i: int) -> int:
  """Example i's one pixel value (every pixel of its image): distinct within and across splits."""
  return 10 + 20 * i if split == "train" else 15 + 20 * i


def _label(split: str, i: int) -> int:
  return (3 * i + (split == "test")) % 10


def _expected(split: str, n: int | None = None) -> set:
  return {(_pixel(split, i), _label(split, i)) for i in range(SIZES[split])[:n]}


def _got(ds) -> set:
  """{(pixel value, label)} of a loaded ArrayDataset (x in [0, 1]); each image is one value."""
  flat = np.asarray(ds.x).reshape(len(ds.y), -1) * 255
  values = np.rint(flat[:, 0]).astype(int)
  assert np.abs(flat - values[:, None]).max() < 1e-3  # float32 v / 255 * 255 ~ v
  return set(zip(values.tolist(), np.asarray(ds.y).tolist()))


def stand_in(name: str, fail_after: int | None = None, urls=None, write_then_fail=False):
  """A builder class for `name` that makes its data instead of downloading it.  fail_after: the
  train split's generation raises after that many examples; write_then_fail: its
  download_and_prepare writes a folder with a dataset_info.json into its data_dir, then raises;
  urls: the URLs it declares (what the network probe checks)."""
  calls = []

  class StandIn(tfds.builder_cls(name), skip_registration=True):
    code_path = None  # no checksums file to look up (it needs importlib_resources)
    url_infos = dict.fromkeys(urls) if urls else None

    def download_and_prepare(self, **kwargs):
      calls.append(kwargs)
      if write_then_fail:
        os.makedirs(self.data_dir, exist_ok=True)
        with open(os.path.join(self.data_dir, "dataset_info.json"), "w", encoding="utf-8") as f:
          json.dump({"name": name}, f)
        raise ConnectionResetError("the server reset the connection")
      return super().download_and_prepare(**kwargs)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in SIZES}

    def _generate_examples(self, split):
      shape = self.info.features["image"].shape
      for i in range(SIZES[split]):
        if split == "train" and fail_after is not None and i == fail_after:
          raise ConnectionResetError("the server reset the connection midway")
        image = np.full(shape, _pixel(split, i), np.uint8)
        png = io.BytesIO()
        PIL.Image.fromarray(image[..., 0] if shape[-1] == 1 else image).save(png, format="png")
        example = {"image": png.getvalue(), "label": _label(split, i)}
        if "id" in self.info.features:
          example["id"] = f"{split}_{i}"
        yield f"{split}_{i}", example

  StandIn.name = name
  StandIn.calls = calls
  return StandIn


@pytest.fixture
def builders(monkeypatch):
  """Installs stand-in builders as tfds_source.make_builder: builders(cls) -> cls.calls."""
  monkeypatch.setattr(idx, "debian_folder", lambda name: None)  # as without the Debian copy
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)

  def install(cls):
    monkeypatch.setattr(
      tfds_source,
      "make_builder",
      lambda name, data_dir: cls(data_dir=data_dir, file_format="array_record"),
    )
    return cls.calls

  return install


def _leftovers(data_dir) -> list:
  """What a download left in data_dir besides tfds's download cache."""
  return sorted(e for e in os.listdir(data_dir) if e != "downloads")


# ----------------------------------------------------------------------------------------------
# A successful download, read back by every loader.


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28, 1))])
def test_download_prepares_a_missing_dataset_that_the_loaders_read(name, shape, tmp_path, builders):
  calls = builders(stand_in(name))
  ds = data.load(name, split="train", data_dir=str(tmp_path), download=True)
  assert ds.x.shape == (SIZES["train"],) + shape and _got(ds) == _expected("train")
  assert len(calls) == 1 and calls[0]["file_format"] == "array_record"
  assert calls[0]["download_dir"] == os.path.join(str(tmp_path), "downloads")
  version = tfds.builder(name, data_dir=str(tmp_path)).info.version
  assert _leftovers(tmp_path) == [name]  # no temporary folder left beside it
  assert os.path.isfile(tmp_path / name / str(version) / "dataset_info.json")
  # Prepared: read again without downloading, the other split and streaming, the same rows.
  test = data.load(name, split="test", data_dir=str(tmp_path))
  src = data.source(name, split="train", data_dir=str(tmp_path), download=True)
  x, y = src.take(np.arange(len(src)))  # uint8, as the host pipeline reads it
  streamed = data.ArrayDataset(data.to_unit_float(x), y, src.num_classes, src.name)
  assert _got(test) == _expected("test") and _got(streamed) == _expected("train")
  assert len(calls) == 1


def test_a_paper_config_downloads_through_the_runners_loader(tmp_path, builders):
  # The binaries' path: fig5 (CIFAR10) parsed with --config.data.download=True, its splits loaded
  # by the runners' loader (config.data.kwargs -> data.load -> download), sizes shrunk.
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from rl_align import inputs  # pylint: disable=g-import-not-at-top

  calls = builders(stand_in("cifar10"))
  argv = [
    "prog",
    "--config=experiments/configs/fig5.py",
    "--config.data.download=True",
    f"--config.data.data_dir={tmp_path}",
    "--config.split.upstream=5",
    "--config.split.downstream=7",
  ]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
  fv(argv)
  parts, _ = inputs.load_splits(fv.config)
  assert len(calls) == 1
  assert [len(parts[k].y) for k in ("upstream", "downstream", "test")] == [5, 7, SIZES["test"]]
  up_down = set(parts["upstream"].y.tolist() + parts["downstream"].y.tolist())
  assert up_down <= {label for _, label in _expected("train")}


# ----------------------------------------------------------------------------------------------
# Failures: one line, the dataset and the fix, nothing a later run reads.


def _one_line(e: Exception, name: str) -> str:
  msg = str(e)
  assert "\n" not in msg and repr(name) in msg and "Fix:" in msg, msg
  return msg


@pytest.mark.parametrize("how", ["midway_in_generation", "after_writing_a_folder"])
def test_a_failed_download_leaves_nothing_a_later_run_reads(how, tmp_path, builders):
  cls = stand_in(
    "cifar10",
    fail_after=5 if how == "midway_in_generation" else None,
    write_then_fail=how == "after_writing_a_folder",
  )
  calls = builders(cls)
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.load("cifar10", data_dir=str(tmp_path), download=True)
  msg = _one_line(info.value, "cifar10")
  assert "could not be downloaded" in msg and "ConnectionResetError" in msg
  assert "tfds build cifar10" in msg and len(calls) == 1
  assert _leftovers(tmp_path) == []  # neither the dataset folder nor the temporary
  with pytest.raises(errors.DatasetNotFoundError, match="not prepared"):
    data.load("cifar10", data_dir=str(tmp_path))  # a later run finds no dataset
  builders(stand_in("cifar10"))  # and a later download succeeds
  assert _got(data.load("cifar10", data_dir=str(tmp_path), download=True)) == _expected("train")


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_an_unreachable_host_fails_before_anything_is_written(tmp_path, builders):
  port = _closed_port()
  calls = builders(stand_in("cifar10", urls=[f"http://127.0.0.1:{port}/cifar-10.tar.gz"]))
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.load("cifar10", data_dir=str(tmp_path), download=True)
  msg = _one_line(info.value, "cifar10")
  assert f"127.0.0.1:{port} did not answer" in msg and "HTTPS_PROXY" in msg
  assert calls == [] and _leftovers(tmp_path) == []  # tfds's download never started


def test_a_host_that_never_answers_is_given_up_after_the_timeout(monkeypatch):
  # A resolver / connect that hangs (no network, packets dropped): the probe gives up after its
  # timeout instead of waiting, and says so.
  release = threading.Event()
  asked = []

  def hang(address, timeout=None):
    asked.append((address, timeout))
    release.wait(60)
    raise OSError("released")

  monkeypatch.setattr(tfds_source.socket, "create_connection", hang)
  for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  try:
    why = tfds_source._probe_hosts(["https://data.example.invalid/a.tar.gz"], 0.05)  # pylint: disable=protected-access
  finally:
    release.set()
  assert why == "data.example.invalid:443 did not answer within 0.05 s"
  assert asked == [(("data.example.invalid", 443), 0.05)]


def test_the_probe_asks_the_proxy_where_one_is_set(monkeypatch):
  port = _closed_port()
  monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
  monkeypatch.delenv("no_proxy", raising=False)
  monkeypatch.delenv("NO_PROXY", raising=False)
  why = tfds_source._probe_hosts(["https://data.example.invalid/a.tar.gz"], 5.0)  # pylint: disable=protected-access
  assert why.startswith(f"127.0.0.1:{port} did not answer")  # the dataset host is not looked up


def test_missing_packages_and_manual_datasets_are_one_line(tmp_path, monkeypatch):
  monkeypatch.setattr(
    tfds_source,
    "PREPARE_NEEDS",
    {"rl_align_no_such_module": "`pip install rl_align_no_such_module`"},
  )
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.load("cifar10", data_dir=str(tmp_path), download=True)
  msg = _one_line(info.value, "cifar10")
  assert "needs rl_align_no_such_module" in msg and "`pip install rl_align_no_such_module`" in msg
  with pytest.raises(errors.DatasetNotFoundError) as info:
    data.load("imagenet2012", image_size=64, data_dir=str(tmp_path), download=True)
  assert "cannot be downloaded" in _one_line(info.value, "imagenet2012")
  assert "--manual_dir" in str(info.value)
  assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# Without download: no network, and the missing-dataset line names the field.


def test_missing_dataset_names_the_download_field_and_downloads_nothing(tmp_path, builders):
  calls = builders(stand_in("cifar10"))
  for name in ("cifar10", "fashion_mnist"):
    with pytest.raises(errors.DatasetNotFoundError) as info:
      data.load(name, data_dir=str(tmp_path))
    assert "--config.data.download=True" in _one_line(info.value, name)
  assert calls == [] and os.listdir(tmp_path) == []


def test_download_is_a_bool_and_embedded_sources_ignore_it():
  assert data.load("gaussian", n=3, stds=[1.0, 2.0], download=True).x.shape == (3, 2)
  with pytest.raises(errors.ConfigError, match="download must be True or False"):
    data.load("cifar10", download="yes")


# ----------------------------------------------------------------------------------------------
# A damaged dataset_info.json.


def test_a_dataset_info_that_is_not_json_is_one_data_error(tmp_path, builders):
  builders(stand_in("cifar10"))
  data.load("cifar10", data_dir=str(tmp_path), download=True)
  (info_path,) = [
    os.path.join(r, f)
    for r, _, fs in os.walk(tmp_path / "cifar10")
    for f in fs
    if f == "dataset_info.json"
  ]
  with open(info_path, "r+", encoding="utf-8") as f:  # cut short, as by a full disk
    text = f.read()
    f.seek(0)
    f.write(text[: len(text) // 2])
    f.truncate()
  for load in (data.load, data.source):
    for download in (False, True):
      with pytest.raises(errors.DataError) as info:
        load("cifar10", data_dir=str(tmp_path), download=download)
      assert not isinstance(info.value, errors.DatasetNotFoundError)
      msg = _one_line(info.value, "cifar10")
      assert f"{info_path} is not valid JSON (JSONDecodeError" in msg
      assert f"delete the folder {os.path.dirname(info_path)} and prepare it again" in msg


# ----------------------------------------------------------------------------------------------
# The config field.


CONFIGS = {
  "fig1": ["positive", "negative,fmnist"],
  "fig2": [""],
  "fig20": ["all"],
  "fig3": [""],
  "fig4_cnn": ["random", "random,fmnist"],
  "fig5": ["", "local", "fmnist"],
  "imagenet": [""],
  "specialization": ["local", "resnet18_imagenet"],
}


def _blocks(c) -> list:
  out = [c.data]
  if "f_only" in c and "data" in c.f_only:
    out.append(c.f_only.data)
  return out


@pytest.mark.parametrize("name, arg", [(n, a) for n, args in CONFIGS.items() for a in args])
def test_every_config_has_data_download_and_the_flag_reaches_every_loader(name, arg):
  import importlib  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from rl_align import inputs  # pylint: disable=g-import-not-at-top

  c = importlib.import_module(f"experiments.configs.{name}").get_config(arg)
  for block in _blocks(c):
    assert block.download is False and inputs.source_kwargs(block)["download"] is False
  spec = f"experiments/configs/{name}.py" + (f":{arg}" if arg else "")
  argv = ["prog", f"--config={spec}", "--config.data.download=True"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
  fv(argv)
  for block in _blocks(fv.config):  # what the runners pass to data.load / data.source
    assert block.download is True and inputs.source_kwargs(block)["download"] is True
  resolved = ml_collections.ConfigDict(fv.config.to_dict())  # as sweeps and panels copy it
  assert all(inputs.source_kwargs(b)["download"] is True for b in _blocks(resolved))
