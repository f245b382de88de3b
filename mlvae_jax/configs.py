"""The config schema every experiment starts from.

Experiments (`experiments/*.py`) call `base_config()` and change fields; they never add keys
of their own, so an override with a typo fails loudly (`lock_config=True`) and every run's
`config.json` has the same shape. The one exception is `config.evals`, the evaluators of the
run: an experiment adds or removes whole entries, each built by `evaluator(type, ...)` with
every setting of its type, so config.json records exactly what was measured.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import ml_collections

from mlvae_jax.config_helpers import flat_items

# The ML-VAE and its baselines on one code path (config.objective.variant): GVAE averages the
# members' posteriors; 'vae' makes every observation its own group (the iid baseline);
# ada_gvae / ada_mlvae pool only the content dimensions a group shares (objectives/adaptive.py).
VARIANTS = ("mlvae", "gvae", "vae", "ada_gvae", "ada_mlvae")


def base_config() -> ml_collections.ConfigDict:
  """All keys with defaults; see docs/evaluators.md, 'Configuration', for their meaning."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"  # digits | mnist | grouped_shapes | grouped_scenes | tfds
  c.data.data_dir = ""  # where TFDS builders write/read prepared data ('' = ~/.cache/mlvae_jax/tfds)
  c.data.manual_dir = ""  # directory with raw files (MNIST IDX files)
  c.data.tfds_name = ""  # generic adapter: any TFDS dataset readable with tfds.data_source
  c.data.image_key = "image"  # generic adapter: feature holding the observation
  c.data.group_by = "label"  # field (or comma-separated fields) whose value defines a group
  c.data.resolution = 32  # grouped_shapes: 32 or 64
  c.data.num_examples = 20000  # grouped_shapes: examples generated for the train split
  c.data.generation_seed = 0  # grouped_shapes: seed of the generated images (not config.seed)
  c.data.batch_size = 256  # N: observations per global batch
  c.data.num_groups = 32  # G: group slots per global batch
  c.data.group_policy = "fixed"  # fixed | uniform | natural | iid
  c.data.group_size = 8  # k for 'fixed'
  c.data.group_size_min = 2  # k_min for 'uniform'
  c.data.group_size_max = 16  # k_max for 'uniform'
  c.data.validation_fraction = 0.1
  c.data.unseen_groups = ""  # comma-separated group values held out of training entirely
  c.data.num_workers = 0  # grain worker processes (0 = in-process)
  # auto | on | off: keep the train split on the devices and gather batches there (auto: when
  # it fits in half of a device's free memory)
  c.data.device_resident = "auto"

  c.model = ml_collections.ConfigDict()
  c.model.family = "mlp"  # mlp | conv
  c.model.hidden = 500
  c.model.hidden_layers = 1  # mlp: hidden layers in the encoder and in the decoder
  c.model.activation = "tanh"
  c.model.content_dim = 10
  c.model.style_dim = 10
  c.model.likelihood = "bernoulli"  # bernoulli | gaussian
  c.model.gaussian_logvar = "learned"  # 'learned' (per pixel) or a float as text, e.g. '-2.0'
  # per_image (the paper: the encoder gives each input its own content variance) | shared (one
  # learned content variance vector for every input, so a group's product is the average of
  # its means) | isotropic (one learned variance for every input and dimension)
  c.model.content_variance = "per_image"
  # none (the paper) | rigid: the decoder's canvas is turned and moved by a pose read linearly
  # from the style code (a spatial-transformer decoder; mlvae_jax/pose/warp.py) | rigid_dedicated:
  # the first three style dimensions are that pose and the decoder does not see them
  c.model.decoder_warp = "none"
  # With decoder_warp='rigid_dedicated', where that pose's means come from: encoder (learned) |
  # moments (the image's centroid and moment angle, and the encoder sees the image brought back
  # to that pose; mlvae_jax/pose/canonical.py), from the harmonic orders in canonical_harmonics
  c.model.pose_from = "encoder"
  c.model.canonical_harmonics = "1,2,3,4"
  # The moment angle: argmax (of sum_k Re(z_k e^{ika})) | mirror_axis (the dominant harmonic's
  # pose where the others are most nearly real: on a mirror-symmetric object's axis)
  c.model.canonical_angle = "argmax"

  c.objective = ml_collections.ConfigDict()
  # mlvae | gvae | vae (iid baseline: every observation its own group) | ada_gvae | ada_mlvae
  c.objective.variant = "mlvae"
  c.objective.beta_content = 1.0
  c.objective.beta_style = 1.0
  c.objective.content_sample = "group"  # group | member: one content draw per group or per member
  # Weight of HSIC(style means, group membership) added to the loss (0: the paper's objective);
  # see mlvae_jax/objectives/independence.py.
  c.objective.style_hsic_weight = 0.0
  # The group's side of that HSIC: membership ([g_i = g_j]) | content (a kernel on each
  # group's product content mean, constant in the gradient: groups alike in content, such as
  # two of one shape, count as alike)
  c.objective.style_hsic_group_kernel = "membership"
  # Weight of HSIC(content's within-group part, learnt style means) added to the loss (0: the
  # paper's objective): content and style independent given the group; independence.py.
  c.objective.content_style_hsic_weight = 0.0
  # With model.pose_from='moments': that HSIC also takes the pose (shift and the angle's
  # harmonics, its own kernel), which it otherwise leaves out like every learnt-style-only term
  c.objective.content_style_hsic_pose = False
  # Weight of the supervised contrastive loss of the content means against group membership
  # (0: the paper's objective) and its temperature; see mlvae_jax/objectives/contrast.py.
  c.objective.content_contrast_weight = 0.0
  c.objective.content_contrast_temperature = 1.0
  # Weight of the angle-equivariance term (0: the paper's objective): the rigid_dedicated warp's
  # angle read from an input turned by up to max_turn radians must turn with it, modulo 2 pi /
  # symmetry (the data's largest rotational symmetry order); see mlvae_jax/pose/equivariance.py.
  c.objective.angle_equivariance_weight = 0.0
  c.objective.angle_equivariance_symmetry = 1
  c.objective.angle_equivariance_max_turn = math.pi / 8
  # Weight of the reverse cycle (Jha et al. 2018; 0: the paper's objective): two groups'
  # contents decoded with one prior style must re-encode to one style (objectives/terms.py).
  c.objective.reverse_cycle_weight = 0.0
  c.objective.kl_warmup_steps = 0  # both KL weights rise linearly from 0 over these steps
  # Fraction of groups whose q(C_G | X_G) is one random member's q(C | x_j) instead of the
  # product (0: the paper's objective); trains strategy-1 content (docs/model.md, section 1).
  c.objective.single_member_rate = 0.0
  # Fraction of input values the encoder sees zeroed during training (masking noise; the
  # decoder still reconstructs the clean input: a denoising ELBO, docs/model.md section 1).
  c.objective.input_masking = 0.0

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"  # constant | cosine
  c.optim.grad_clip_norm = 0.0  # 0 disables clipping
  c.optim.weight_decay = 0.0  # AdamW's decoupled decay, scaled by the schedule; 0 is Adam

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 2000
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.keep_best_metric = ""  # e.g. 'val/elbo' keeps the best checkpoint by it
  c.train.resume = "auto"  # auto | restart | never
  c.train.debug_checks = False  # validate every batch on the host
  c.train.on_nonfinite = "stop"  # stop | skip: what a NaN/inf loss or gradient does (docs/runtime.md: Faults)
  c.train.max_nonfinite_in_a_row = 10  # skip: this many dropped updates in a row end the run
  # K: steps per jitted call (a lax.scan; cadences end calls early), or 'auto': the backend's
  # (training/step_calls.py: 32 on an accelerator, on CPU 16 for dense models, 1 for conv)
  c.train.steps_per_call = ml_collections.FieldReference("auto", field_type=object)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # devices along the batch axis (-1: all devices of all hosts)

  # Evaluators: config.evals.<name> = evaluator(type, split=..., every=..., **settings); their
  # metrics are '<name>/<metric>'. `every` is a step count (0: only at the end of the run).
  # An evaluator built without a split measures split HELDOUT, which is evals_split:
  # 'validation' while choosing; 'test' only to report a setting chosen on validation, once
  # (docs/mnist/README.md, 'Protocol'). Reports and headlines name the split they read.
  c.evals_split = "validation"
  c.evals = ml_collections.ConfigDict()
  c.evals.val = evaluator("elbo", split="validation", every=500)
  c.evals.test = evaluator("elbo")  # the held-out ELBO: on evals_split, whatever its name
  c.evals.classify = evaluator("classify")
  return c


# Every evaluator type with the defaults of its own settings (beyond type, split and every);
# a type registered in mlvae_jax.evaluation must be listed here, so configs stay free of jax.
EVALUATOR_SETTINGS: dict[str, dict[str, object]] = {
    # group ELBO terms, group-weighted over an epoch of the split (max_batches caps it; 0 = all)
    "elbo": {"max_batches": 0},
    # probes of the group label from content and style codes, fitted on fit_split: linear
    # (content_accuracy, style_accuracy) and the non-linear ones in `probes` (knn, mlp)
    "classify": {"fit_split": "train", "max_examples": 5000, "probes": ("knn", "mlp"),
                 "knn_neighbours": 5, "mlp_hidden": 256},
    # swap consistency judged by pixel classifiers fitted on fit_examples real images of
    # fit_split (group label, and each factor quantised into <= bins classes); judge: 'mlp'
    # (classifier_hidden units) or 'encoder' (the run's encoder architecture as a classifier).
    # Judges are fitted once per fit data and settings and cached in
    # DATA_DIR/mlvae_judges/; metric judge_key names them (evaluation/judge_cache.py)
    "swap": {"fit_split": "train", "fit_examples": 20000, "max_examples": 5000,
             "num_pairs": 2000, "bins": 8, "classifier_hidden": 512, "classifier_epochs": 4,
             "judge": "mlp"},
    # do swaps take the style source's slant, width and stroke thickness (class-normalised,
    # against the reconstruction ceiling), and does re-encoding a swap retrieve its style
    # source among `candidates`? (evaluation/style_transfer.py)
    "style_transfer": {"max_examples": 5000, "num_pairs": 2000, "candidates": 10},
    # group identification as strategy 2 pools k support members, k in support_sizes
    "accumulation": {"support_sizes": (1, 2, 4, 8, 16), "repeats": 5, "max_examples": 5000},
    # predictability of each ground-truth factor (quantised into <= bins classes) from each
    # code by `probe` (linear, knn or mlp)
    "disentanglement": {"fit_split": "train", "max_examples": 5000, "bins": 8, "probe": "linear"},
    # the same factor gains of codes computed without learning (evaluation/baseline.py): kind
    # group_pca (PCA of group means / of residuals) or moments (moment pose, canonical-frame PCA)
    "baseline": {"fit_split": "train", "max_examples": 5000, "bins": 8, "probe": "linear",
                 "kind": "group_pca", "content_dim": 6, "style_dim": 6},
    # Pictures (images, figures; accumulation's curve) come at their evaluator's `every`: each
    # evaluation during training puts them in eval/pictures/step_<N>/ and in TensorBoard at
    # step N (tags pictures/<name>); the final one's also stay in eval/. every=0: the end only.
    # swap.png (grid x grid) and reconstructions.png; images enlarged to >= min_pixels
    "images": {"grid": 8, "min_pixels": 48, "max_examples": 5000},
    # prior.png (grid x grid), traversals.png (every dimension over +-traversal_limit) and
    # interpolation.png (two groups' pooled content, pool_size members each)
    "figures": {"grid": 8, "traversal_steps": 9, "traversal_limit": 2.0, "interpolation_steps": 8,
                "interpolation_rows": 4, "pool_size": 8, "min_pixels": 48, "max_examples": 5000},
    # MIG, SAP, DCI, modularity/explicitness, FactorVAE, BetaVAE on full/content/style codes;
    # disentanglement_lib uses 10000 points, 100 trees, 10000/5000 FactorVAE and BetaVAE
    # batches: these defaults trade that for minutes on a CPU (trees cost points x levels)
    "disentanglement_suite": {
        "max_examples": 2000, "num_bins": 20, "train_fraction": 0.8, "dci_trees": 20,
        "factor_vae_batch_size": 64, "factor_vae_train": 300, "factor_vae_eval": 150,
        "factor_vae_variance_examples": 5000, "prune_threshold": 0.05,
        "beta_vae_batch_size": 64, "beta_vae_train": 300, "beta_vae_eval": 150},
}


def fill_later_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
  """A run's saved config with every key added to the schema since it was written set to
  its default. A key is only ever added with a default that keeps the behaviour from before
  it (e.g. optim.weight_decay=0 is plain Adam), so an older run still resumes, evaluates and
  loads as it was trained. Its evaluators (`evals`) are its own: none is added, but each
  gets the default of any setting its type gained since (e.g. swap's judge='mlp')."""
  filled = copy.deepcopy(dict(saved))
  for path, value in flat_items(base_config().to_dict()).items():
    if not path.startswith("evals."):
      _set_default(filled, path.split("."), value)
  for name, entry in filled.get("evals", {}).items():
    for setting, value in EVALUATOR_SETTINGS.get(entry.get("type"), {}).items():
      _set_default(filled, ["evals", name, setting], value)
  return filled


def _set_default(tree: dict[str, Any], path: list[str], value: Any) -> None:
  *parents, leaf = path
  for parent in parents:
    tree = tree.setdefault(parent, {})
  tree.setdefault(leaf, value)


# The split of an evaluator built without one: config.evals_split, resolved when the run's
# evaluators are built (so `--config.evals_split=test` reports every such evaluator on test).
HELDOUT = "heldout"
EVALS_SPLITS = ("validation", "test")


def resolve_split(split: str, config: ml_collections.ConfigDict) -> str:
  """The data split an evaluator entry reads: `config.evals_split` for HELDOUT, else itself."""
  if split != HELDOUT:
    return split
  check_choice("evals_split", config.evals_split, EVALS_SPLITS)
  return config.evals_split


def resolved_entry(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """A copy of `config.evals.<name>` whose split is the data split it reads."""
  entry = copy.deepcopy(config.evals[name])
  entry.split = resolve_split(entry.split, config)
  return entry


def evaluator(type: str, *, split: str = HELDOUT, every: int = 0, **settings: object
              ) -> ml_collections.ConfigDict:  # noqa: A002 - `type` is the config field's name
  """One `config.evals` entry: the type's default settings updated by `settings`; without
  `split` it measures config.evals_split (validation unless reporting)."""
  check_choice("evals.<name>.type", type, tuple(EVALUATOR_SETTINGS))
  defaults = EVALUATOR_SETTINGS[type]
  unknown = sorted(set(settings) - set(defaults))
  if unknown:
    raise ValueError(
        f"evaluator type {type!r} has no setting {unknown[0]!r}; its settings are "
        f"{['split', 'every', *defaults]}"
    )
  return ml_collections.ConfigDict(
      {"type": type, "split": split, "every": every, **defaults, **settings}
  )


def check_choice(field: str, value: object, choices: tuple[str, ...]) -> None:
  """Raises a ValueError naming the config field, its bad value and the valid choices."""
  if value not in choices:
    raise ValueError(f"config.{field}={value!r} is unknown; use one of {choices}")
