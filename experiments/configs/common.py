"""What every config file shares: a strict parser for `file.py:a,b,key=value` and the base config.

A config file declares the arguments it accepts, with their defaults, and gets them back typed::

    from experiments.configs import common

    def get_config(arg: str = "") -> ml_collections.ConfigDict:
      a = common.parse_arg(arg, transfer=common.OneOf("positive", "negative"),
                           scale=common.OneOf("paper", "local"), random=False, steps=100)
      c = common.base_config()
      ...   # a.transfer == "negative", a.scale == "paper", a.random is False, a.steps == 100

so that `my_figure.py:negative,random,steps=50` gives transfer="negative", random=True, steps=50.  The
forms, separated by commas:

- a bare word that names a bool argument sets it (`random`); `random=false` sets it explicitly;
- a bare word that names an alternative of a `OneOf` picks it (`negative`), as does `transfer=negative`;
- bare words that name members of an `AnyOf` select them together (`left,right`); an alias selects a
  group (`all`); with none named the argument keeps its default;
- `key=value` for an int, float or str argument, converted to the default's type (`steps=50`).

Anything else (an unknown or misspelt word, an unknown key, a value of the wrong type, two
alternatives of one `OneOf`) raises `rl_align.errors.ConfigError` with one line that names the
argument, the closest accepted one and every accepted form.  The binaries print that line and exit 2.

Every config file decorates its `get_config` with `with_download`: each data block gets the field
`download` (default False; `--config.data.download=True` downloads a missing real dataset).
"""

import difflib
import functools
import os
import sys
from typing import Any, Mapping

import ml_collections

from rl_align import errors
from rl_align.engine import config as engine_config

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


class OneOf:
  """Exactly one of named alternatives; the default is the first unless given."""

  def __init__(self, *choices: str, default: str | None = None):
    if not choices or default is not None and default not in choices:
      raise TypeError(f"OneOf{choices}: default {default!r} is not one of the choices.")
    self.choices, self.default = tuple(choices), default or choices[0]

  def words(self) -> tuple:
    return self.choices

  def describe(self, key: str) -> str:
    return f"{key}: {'|'.join(self.choices)} (default {self.default})"


class AnyOf:
  """Any subset of named members, returned as a tuple in declaration order.

  `aliases` name groups (`{"all": ("left", "middle", "right")}`); `default` is the selection when
  none is named (all members unless given).
  """

  def __init__(self, *choices: str, default: tuple = None, aliases: Mapping[str, tuple] = None):
    self.choices = tuple(choices)
    self.aliases = {k: tuple(v) for k, v in (aliases or {}).items()}
    self.default = tuple(self.choices if default is None else default)
    for name, group in list(self.aliases.items()) + [("default", self.default)]:
      if not set(group) <= set(self.choices):
        raise TypeError(f"AnyOf{self.choices}: {name} {group} names non-members.")

  def words(self) -> tuple:
    return self.choices + tuple(self.aliases)

  def describe(self, key: str) -> str:
    alias = "".join(f" or {a}" for a in self.aliases)
    return f"{key}: any of {','.join(self.choices)}{alias} (default {','.join(self.default)})"

  def select(self, word: str) -> tuple:
    return self.aliases.get(word, (word,))


def _caller_file() -> str:
  """The config file that called parse_arg (for the error line), e.g. 'fig1.py'."""
  frame = sys._getframe(2)  # pylint: disable=protected-access
  return os.path.basename(frame.f_globals.get("__file__") or "config")


def _accepted(spec: Mapping[str, Any]) -> str:
  out = []
  for key, d in spec.items():
    if isinstance(d, (OneOf, AnyOf)):
      out.append(d.describe(key))
    elif isinstance(d, bool):
      out.append(key)
    else:
      out.append(f"{key}=<{type(d).__name__}> (default {d!r})")
  return "; ".join(out) if out else "no arguments"


def _convert(where: str, key: str, default: Any, raw: str) -> Any:
  """raw (the text after `key=`) as the type of `default`; ConfigError when it does not parse."""
  if isinstance(default, OneOf):
    if raw in default.choices:
      return raw
    want = "one of " + "|".join(default.choices)
  elif isinstance(default, AnyOf):
    if raw in default.words():
      return default.select(raw)
    want = "one of " + "|".join(default.words())
  elif isinstance(default, bool):
    if raw.lower() in _TRUE + _FALSE:
      return raw.lower() in _TRUE
    want = "true or false"
  else:
    try:
      return type(default)(raw)
    except ValueError:
      name = type(default).__name__
      want = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
  raise errors.ConfigError(
    f"{where}: config argument {key}={raw!r} is invalid: expected {want}. "
    f"Fix: e.g. {key}={_example(default)}."
  )


def _example(default: Any) -> str:
  if isinstance(default, OneOf):
    return default.choices[-1]
  if isinstance(default, AnyOf):
    return default.choices[0]
  if isinstance(default, bool):
    return "true"
  return str(default)


def _word_owners(spec: Mapping[str, Any]) -> dict:
  """bare word -> the argument it sets; two arguments claiming one word is the config's bug."""
  owners = {}
  for key, d in spec.items():
    if isinstance(d, (OneOf, AnyOf)):
      words = d.words()
    elif isinstance(d, bool):
      words = (key,)
    elif isinstance(d, (int, float, str)):
      words = ()
    else:
      raise TypeError(
        f"parse_arg: default of {key!r} must be bool, int, float, str, OneOf or "
        f"AnyOf, got {type(d).__name__}."
      )
    for w in words:
      if w in owners:
        raise TypeError(f"parse_arg: the word {w!r} belongs to both {owners[w]!r} and {key!r}.")
      owners[w] = key
  return owners


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses a config argument `a,b,key=value` against `spec` (name -> default); see the module doc.

  Returns a locked ConfigDict with one typed field per spec entry.  Raises errors.ConfigError (one
  line naming the argument, the closest accepted word and all accepted forms) on anything unknown.
  """
  where = _caller_file()
  owners = _word_owners(spec)
  values = {k: (d.default if isinstance(d, (OneOf, AnyOf)) else d) for k, d in spec.items()}
  chosen, selected = {}, {k: [] for k, d in spec.items() if isinstance(d, AnyOf)}
  for part in (p.strip() for p in (arg or "").split(",")):
    if not part:
      continue
    if "=" in part:
      key, raw = (s.strip() for s in part.split("=", 1))
      if key not in spec:
        _unknown(where, part, key, list(spec), spec)
      value = _convert(where, key, spec[key], raw)
    elif part in owners:
      key = owners[part]
      value = (
        spec[key].select(part)
        if isinstance(spec[key], AnyOf)
        else (True if isinstance(spec[key], bool) else part)
      )
    else:
      _unknown(where, part, part, list(owners) + [f"{k}=" for k in spec], spec)
    if key in selected:
      selected[key].extend(value)
      continue
    if key in chosen and chosen[key][1] != value:
      raise errors.ConfigError(
        f"{where}: config arguments {chosen[key][0]!r} and {part!r} both set {key!r}. "
        f"Fix: give one of them."
      )
    chosen[key] = (part, value)
    values[key] = value
  for key, members in selected.items():
    if members:
      values[key] = tuple(c for c in spec[key].choices if c in members)
  out = ml_collections.ConfigDict(values)
  out.lock()
  return out


def _unknown(where: str, part: str, name: str, candidates: list, spec: Mapping[str, Any]) -> None:
  close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
  hint = f" (did you mean {close[0].rstrip('=')!r}?)" if close else ""
  raise errors.ConfigError(
    f"{where}: unknown config argument {part!r}{hint}. Accepted: "
    f"{_accepted(spec)}. Fix: use one of them, comma separated."
  )


def with_download(get_config):
  """Decorator of a config file's `get_config`: every data block of the config it returns (each
  ConfigDict with `name`, `kwargs` and `placement`: config.data, config.f_only.data, ...) gets the
  field `download` (default False), one switch for the whole run::

      @common.with_download
      def get_config(arg: str = "") -> ml_collections.ConfigDict: ...

      --config.data.download=True     # a missing real dataset is downloaded into data_dir (tfds)

  The runners pass `data.kwargs` to `rl_align.data.load` / `source`, which every source accepts
  `download` in (embedded sources ignore it), so the blocks' kwargs hold the same reference:
  whatever path sets it (the flag above, or --config.f_only.data.download=...), every block reads
  it."""

  @functools.wraps(get_config)
  def wrapped(*args, **kwargs):
    c = get_config(*args, **kwargs)
    ref = ml_collections.FieldReference(bool(c.data.get("download", False)))
    for block in _data_blocks(c):
      block.download = ref
      block.kwargs.download = ref
    return c

  return wrapped


def _data_blocks(node):
  """Every ConfigDict under `node` (itself included) that is a data block."""
  if not isinstance(node, ml_collections.ConfigDict):
    return []
  if all(k in node for k in ("name", "kwargs", "placement")):
    return [node]
  return [b for k in node.keys() for b in _data_blocks(node[k])]


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment config has (data, labels, model, the engine's train config)."""
  c = ml_collections.ConfigDict()
  # data.placement: "device" (the training set loaded as arrays), "host" (nothing loaded: the
  # engine's batches stream from data.source through rl_align.pipeline, the same numbers) or
  # "auto" (by size); read by every runner (rl_align.runners.common.load_data).
  c.data = ml_collections.ConfigDict(
    {"name": "gaussian", "kwargs": {}, "data_dir": "", "standardize": False, "placement": "device"}
  )
  c.labels = "random"
  c.num_classes = 10
  c.model = ml_collections.ConfigDict(
    {"name": "dense", "widths": (2048, 256), "num_classes": 10, "dtype": "float32"}
  )
  c.train = engine_config.default_config()
  # The figure whose claims the run tests (rl_align.claims: fig2, fig3, fig4, fig5, fig1, ...;
  # "" for none): the runner writes it, with every claim's verdict, into results.json.
  c.claims = ml_collections.ConfigDict({"figure": ""})
  return c
