"""From a data config to the examples of a dataset, as (memory-mapped) numpy arrays.

TFDS prepares each dataset once (array_record files); the first use then decodes every
record into a numpy cache beside it, so batches are plain array gathers: per-record
decoding (~40 us) would make a 256-row batch slower than a train step. Multi-host processes
memory-map the cache and touch only their own rows.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Mapping

from absl import logging
import numpy as np

from mlvae_jax.data import scenes, shapes
from mlvae_jax.data.errors import DataError

DATASETS = ("digits", "mnist", "grouped_shapes", "grouped_scenes", "tfds")
# The procedural datasets: their renderer module, by data.name.
RENDERERS = {"grouped_shapes": shapes, "grouped_scenes": scenes}
_CHUNK = 1024
_CACHE_FORMAT = 1
_ORIGIN = "__origin__"  # key of the TFDS split codes in fields.npz


@dataclasses.dataclass(frozen=True)
class Examples:
  """Every example of a dataset: TFDS splits concatenated, `origin` says which one."""

  images: np.ndarray  # [n, H, W, C], usually a read-only memmap
  fields: Mapping[str, np.ndarray]  # scalar numeric and text features, [n] each
  origin: np.ndarray  # [n] int8 index into origin_names
  origin_names: tuple[str, ...]  # TFDS split names, e.g. ('test', 'train')
  pixel_scale: float  # images / pixel_scale lie in [0, 1]
  factor_names: tuple[str, ...] | None  # fields forming `factors`, None if no factors

  def factors(self, rows: np.ndarray) -> np.ndarray | None:
    if self.factor_names is None:
      return None
    return np.stack([self.fields[name][rows] for name in self.factor_names], 1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class _Spec:
  builder: Any  # tfds.core.DatasetBuilder
  image_key: str
  pixel_scale: float | None  # None: infer (binary images 1, other integers 255, floats 1)
  factor_names: tuple[str, ...] | None  # None with `generic`: all integer fields
  generic: bool


def data_dir(data_config: Any) -> pathlib.Path:
  """Where prepared data lives: data.data_dir, or ~/.cache/mlvae_jax/tfds when empty."""
  return pathlib.Path(data_config.data_dir or "~/.cache/mlvae_jax/tfds").expanduser()


def check_shapes_config(data_config: Any) -> None:
  if data_config.resolution not in (32, 64):
    raise DataError(
        f"data.resolution={data_config.resolution} is not supported by {data_config.name}; "
        "use 32 or 64"
    )
  if data_config.num_examples < 1:
    raise DataError(f"data.num_examples={data_config.num_examples} must be >= 1")


def _spec(data_config: Any) -> _Spec:
  # Imported on first use: tensorflow_datasets takes seconds to import, and
  # `observation_shape` of the built-in datasets never needs it.
  from mlvae_jax.data import builders  # pylint: disable=import-outside-toplevel

  name, root = data_config.name, str(data_dir(data_config))
  kwargs = dict(data_dir=root, file_format="array_record")
  if name == "digits":
    return _Spec(builders.Digits(**kwargs), "image", 16.0, None, False)
  if name == "mnist":
    manual = data_config.manual_dir or None
    return _Spec(builders.Mnist(manual_dir=manual, **kwargs), "image", 255.0, None, False)
  if name in RENDERERS:
    check_shapes_config(data_config)
    builder_cls = builders.GroupedScenes if name == "grouped_scenes" else builders.GroupedShapes
    config = builders.GroupedShapesConfig.create(
        data_config.resolution, data_config.num_examples,
        int(data_config.generation_seed))
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # TFDS warns of every custom config; ours always are
    predefined = {c.name for c in builder_cls.BUILDER_CONFIGS}
    try:  # TFDS refuses a custom config named like a predefined one: name that one instead
      builder = builder_cls(
          config=config.name if config.name in predefined else config, **kwargs)
    finally:
      logging.set_verbosity(verbosity)
    return _Spec(builder, "image", 255.0, RENDERERS[name].FACTOR_NAMES, False)
  if name == "tfds":
    return _Spec(_generic_builder(data_config, root), data_config.image_key, None, None, True)
  raise DataError(
      f"unknown dataset data.name={name!r}; choose one of {', '.join(DATASETS)} (use 'tfds' "
      "with data.tfds_name for any other TFDS dataset)"
  )


def _generic_builder(data_config: Any, root: str) -> Any:
  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds

  from mlvae_jax.data.builders.array_record import ArrayRecordBuilder

  if not data_config.tfds_name:
    raise DataError("data.name='tfds' needs data.tfds_name, e.g. 'dsprites' or 'shapes3d'")
  try:
    builder = tfds.builder(data_config.tfds_name, data_dir=root)
  except Exception as e:  # DatasetNotFoundError, or a builder whose module needs TF
    raise DataError(
        f"TFDS has no usable dataset {data_config.tfds_name!r} ({type(e).__name__}: {e}); "
        "check data.tfds_name (see mlvae_jax/data/README.md)"
    ) from e
  if not builder.is_prepared():
    name = data_config.tfds_name
    if isinstance(builder, ArrayRecordBuilder):  # ours, e.g. mlvae_lfw: no TensorFlow needed
      how = f"run: python -m mlvae_jax.data.builders {name} --data_dir={root}"
    else:
      how = (f"with the [tf] extra installed run: tfds build {name} --data_dir={root} "
             "--file_format=array_record")
    raise DataError(f"TFDS dataset {name!r} is not prepared in {root}; {how} (see "
                    "mlvae_jax/data/README.md)")
  return builder


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in record.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _cache_dir(spec: _Spec, root: pathlib.Path) -> pathlib.Path:
  relative = pathlib.Path(spec.builder.data_dir).relative_to(pathlib.Path(root).resolve())
  return root / "mlvae_numpy" / relative / spec.image_key.replace("/", "_")


def cache_dir(data_config: Any) -> pathlib.Path:
  """Where `prepare` keeps this dataset's numpy cache; its meta.json marks it complete."""
  return _cache_dir(_spec(data_config), data_dir(data_config))


def _data_sources(spec: _Spec) -> Mapping[str, Any]:
  try:
    return spec.builder.as_data_source()
  except Exception as e:  # e.g. a dataset prepared as tfrecord
    raise DataError(
        f"cannot read {spec.builder.name} with tfds.data_source ({type(e).__name__}: {e}); "
        "prepare it with --file_format=array_record"
    ) from e


def _decode_chunks(source: Any, spec: _Spec):
  """(images [c, H, W, C], {field: [c]}) for consecutive chunks of a TFDS data source."""
  for start in range(0, len(source), _CHUNK):
    chunk = range(start, min(start + _CHUNK, len(source)))
    records = [_flatten(r) for r in source.__getitems__(chunk)]
    if spec.image_key not in records[0]:
      raise DataError(
          f"{spec.builder.name} has no image feature {spec.image_key!r} (features: "
          f"{sorted(records[0])}); set data.image_key to one of them"
      )
    images = np.stack([np.asarray(r[spec.image_key]) for r in records])
    fields = {key: _field_column([r[key] for r in records]) for key, value in records[0].items()
              if key != spec.image_key and np.ndim(value) == 0
              and np.asarray(value).dtype.kind in "biufSU"}
    yield (images[..., None] if images.ndim == 3 else images), fields


def _field_column(values: list[Any]) -> np.ndarray:
  """A scalar feature of every record; text (TFDS returns bytes) as str, e.g. lfw's names."""
  column = np.asarray(values)
  return np.char.decode(column, "utf-8") if column.dtype.kind == "S" else column


def _write_cache(spec: _Spec, target: pathlib.Path) -> None:
  """Decodes every record once into images.npy + fields.npz + meta.json (atomic rename)."""
  sources = _data_sources(spec)
  names = tuple(sorted(sources))
  total = sum(len(sources[n]) for n in names)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
  try:
    images, fields, offset = None, {_ORIGIN: []}, 0
    for code, split in enumerate(names):
      fields[_ORIGIN].append(np.full(len(sources[split]), code, np.int8))
      for chunk, chunk_fields in _decode_chunks(sources[split], spec):
        if images is None:
          images = np.lib.format.open_memmap(tmp / "images.npy", "w+", chunk.dtype,
                                             (total,) + chunk.shape[1:])
        images[offset:offset + len(chunk)] = chunk
        offset += len(chunk)
        for key, values in chunk_fields.items():
          fields.setdefault(key, []).append(values)
    images.flush()
    fields = {k: np.concatenate(v) for k, v in fields.items()}
    np.savez(tmp / "fields.npz", **fields)
    factor_names = spec.factor_names
    if spec.generic:
      factor_names = tuple(k for k in sorted(fields) if k != _ORIGIN
                           and fields[k].dtype.kind in "biu") or None
    meta = dict(format=_CACHE_FORMAT, origin_names=names, factor_names=factor_names,
                pixel_scale=spec.pixel_scale or _infer_pixel_scale(images))
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.replace(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _infer_pixel_scale(images: np.ndarray) -> float:
  if images.dtype.kind == "f":
    return 1.0
  return 1.0 if images.max() <= 1 else 255.0


def _report(what: str, where: Any, start: float) -> None:
  """One line on stderr per preparation stage: what, where, how long (since `start`)."""
  print(f"data: {what} in {where} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)


def _split_sizes(builder: Any) -> str:
  return ", ".join(f"{name} {split.num_examples}" for name, split in builder.info.splits.items())


def prepare(data_config: Any) -> pathlib.Path:
  """Prepares the dataset (TFDS) and its numpy cache if needed; returns the cache directory."""
  spec = _spec(data_config)
  root = data_dir(data_config)
  cache = _cache_dir(spec, root)
  if (cache / "meta.json").is_file():
    return cache
  root.mkdir(parents=True, exist_ok=True)
  with open(root / ".prepare.lock", "w") as lock:
    # Processes sharing a data_dir (multi-host on one machine) prepare one at a time.
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not spec.generic and not spec.builder.is_prepared():
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

      # TFDS's per-split progress bars flood logs and test output; keep them for terminals.
      tfds.display_progress_bar(sys.stderr.isatty())
      try:
        start = time.perf_counter()
        spec.builder.download_and_prepare()
        _report(f"prepared {spec.builder.name} ({_split_sizes(spec.builder)})",
                spec.builder.data_dir, start)
      finally:
        tfds.display_progress_bar(True)
    if not (cache / "meta.json").is_file():
      start = time.perf_counter()
      _write_cache(spec, cache)
      _report(f"decoded {spec.builder.name} into a numpy cache", cache, start)
  return cache


def load_examples(data_config: Any) -> Examples:
  """All examples of the configured dataset, preparing them on first use."""
  cache = prepare(data_config)
  meta = json.loads((cache / "meta.json").read_text())
  with np.load(cache / "fields.npz") as npz:
    fields = {k: npz[k] for k in npz.files}
  origin = fields.pop(_ORIGIN)
  factor_names = meta["factor_names"]
  return Examples(
      images=np.load(cache / "images.npy", mmap_mode="r"),
      fields=fields,
      origin=origin,
      origin_names=tuple(meta["origin_names"]),
      pixel_scale=float(meta["pixel_scale"]),
      factor_names=tuple(factor_names) if factor_names else None,
  )
