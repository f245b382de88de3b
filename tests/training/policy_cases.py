"""The data settings both device-feed test files draw from: one per group policy."""

from mlvae_jax import configs

POLICIES = {
    "fixed": dict(group_policy="fixed", group_size=5),  # padding rows in every batch
    "uniform": dict(group_policy="uniform", group_size_min=2, group_size_max=9),
    "natural": dict(group_policy="natural"),
    "iid": dict(group_policy="iid", num_groups=64),
}


def make_config(root, **overrides):
  """The digits data config under `root` with a batch of 64 and 16 group slots."""
  config = configs.base_config().data
  config.update(dict(data_dir=str(root), batch_size=64, num_groups=16))
  config.update(overrides)
  return config
