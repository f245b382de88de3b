"""Faces grouped by identity, end to end: a small TFDS dataset with LFW's features (64x64x3
uint8 photos, the person's name as text) read by the generic adapter, grouped and held out
by name, through the faces experiment's smoke mode to the accumulation curve on unseen
people; and the `mlvae_lfw` builder on a small LFW-shaped archive."""

import io
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import faces
from mlvae_jax import configs, data, inference, train
from mlvae_jax.data.builders import lfw

PEOPLE = ("Ann_Lee", "Bo_Li", "Cyd_Charisse", "Dee_Dee", "Eve_Ray", "Zoë_Ärger")
PHOTOS = 20  # per person: more than the largest support set (16), so k = 16 has queries
UNSEEN = "Bo_Li,Zoë_Ärger"


class MlvaeTestFaces(tfds.core.GeneratorBasedBuilder):
  """LFW's features at toy scale: each person a colour, each photo a blob somewhere else."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(64, 64, 3), dtype=np.uint8),
        "label": tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(0)
    grid = np.mgrid[:64, :64]
    for p, person in enumerate(PEOPLE):
      colour = np.array([p % 2, (p // 2) % 2, (p // 4) % 2 + 0.5]) * 160 + 40
      for i in range(PHOTOS):
        centre = rng.uniform(16, 48, size=2)
        blob = np.exp(-((grid - centre[:, None, None]) ** 2).sum(0) / 120.0)
        yield f"{person}/{i}", {"image": (blob[..., None] * colour).astype(np.uint8),
                                "label": person}


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("faces_tfds")
  tfds.builder("mlvae_test_faces", data_dir=str(root),
               file_format="array_record").download_and_prepare()
  return root


def _smoke_config(root):
  config = faces.get_config("smoke")
  config.data.update(tfds_name="mlvae_test_faces", data_dir=str(root), unseen_groups=UNSEEN)
  return config


def test_names_group_and_hold_out_people(faces_root):
  config = _smoke_config(faces_root).data
  assert data.observation_shape(config) == (64, 64, 3)
  splits = {name: data.load_split(config, name) for name in ("train", "validation", "unseen")}
  names = splits["train"].group_names
  assert names == tuple(sorted(PEOPLE))
  seen_by = {name: {names[code] for code in split.labels} for name, split in splits.items()}
  assert seen_by["unseen"] == {"Bo_Li", "Zoë_Ärger"}
  assert seen_by["train"] == set(PEOPLE) - seen_by["unseen"]
  assert len(splits["unseen"].labels) == 2 * PHOTOS
  batch = next(data.make_batch_iterator(config, "train", seed=0))
  ids, labels = batch["group_ids"][batch["mask"]], batch["labels"][batch["mask"]]
  for group in np.unique(ids):  # a group is one person
    assert len(set(labels[ids == group])) == 1


def test_faces_smoke_run_measures_the_curve_on_unseen_people(faces_root, tmp_path):
  config = _smoke_config(faces_root)
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert final["accumulation/num_groups"] == 2 and final["accumulation/chance"] == 0.5
  for k in (1, 2, 4, 8, 16):
    assert 0.0 <= final[f"accumulation/accuracy_k{k}"] <= 1.0
  # More evidence, a narrower pooled content posterior.
  assert final["accumulation/content_logvar_k16"] < final["accumulation/content_logvar_k1"]
  trained = inference.load(str(tmp_path / "run"))
  unseen = data.load_split(trained.config.data, "unseen")
  people, ids = np.unique(unseen.labels, return_inverse=True)
  pooled = trained.content(unseen.x, ids)
  assert pooled.mu.shape == (2, config.model.content_dim) and np.all(np.isfinite(pooled.mu))
  zoe = unseen.group_names.index("Zoë_Ärger")
  np.testing.assert_allclose(trained.content(unseen.x[unseen.labels == zoe]).mu,
                             pooled.mu[np.searchsorted(people, zoe)], rtol=1e-4, atol=1e-5)


def _archive(path, photos):
  """An LFW-shaped lfw.tgz: lfw/<Person>/<Person>_<n>.jpg (PNG bytes: lossless to compare)."""
  image = pytest.importorskip("PIL.Image")
  with tarfile.open(path, "w:gz") as tar:
    for name, photo in photos.items():
      buffer = io.BytesIO()
      image.fromarray(photo).save(buffer, format="PNG")
      info = tarfile.TarInfo(f"lfw/{name.split('/')[0]}/{name.split('/')[1]}.jpg")
      info.size = buffer.tell()
      buffer.seek(0)
      tar.addfile(info, buffer)


def test_lfw_builder_keeps_the_central_faces_averaged_down(tmp_path):
  rng = np.random.default_rng(1)
  photos = {f"{person}/{person}_{i:04d}": rng.integers(0, 256, (250, 250, 3), dtype=np.uint8)
            for person in ("Ann_Lee", "Zoë_Ärger") for i in (1, 2)}
  manual = tmp_path / "manual"
  manual.mkdir()
  _archive(manual / lfw.ARCHIVE, photos)
  builder = tfds.builder("mlvae_lfw", data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  config = configs.base_config().data
  config.update(name="tfds", tfds_name="mlvae_lfw", data_dir=str(tmp_path / "tfds"),
                validation_fraction=0.0)
  split = data.load_split(config, "train")
  assert split.group_names == ("Ann_Lee", "Zoë_Ärger")
  expected = [photo[61:189, 61:189].reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
              for photo in photos.values()]  # archive order
  np.testing.assert_allclose(split.x * 255, expected, atol=0.5 + 1e-4)
  np.testing.assert_array_equal(split.labels, [0, 0, 1, 1])


def test_lfw_builder_names_the_missing_archive(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "lfw-funneled.tgz").write_bytes(b"")
  builder = tfds.builder("mlvae_lfw", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(data.DataError, match=f"{manual}/lfw.tgz is missing; put lfw.tgz"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))


def test_faces_experiment_says_how_to_prepare_lfw(tmp_path):
  config = faces.get_config("smoke").data
  config.data_dir = str(tmp_path)
  with pytest.raises(data.DataError, match="'mlvae_lfw' is not prepared in .*; run: python -m "
                     f"mlvae_jax.data.builders mlvae_lfw --data_dir={tmp_path}"):
    data.load_split(config, "train")
