r"""`tfds build` for mlvae_jax's datasets, without TensorFlow.

The `tfds` command imports TensorFlow at start-up (its `convert_format` subcommand needs
it), so without the `[tf]` extra it fails before building anything. This runs TFDS's own
`build` subcommand, with the same flags, after registering our builders:

  python -m mlvae_jax.data.builders mlvae_mnist --manual_dir=DIR --data_dir=DATA_DIR
  python -m mlvae_jax.data.builders mlvae_lfw --data_dir=DATA_DIR   # downloads lfw.tgz, 180 MB

With TensorFlow installed, `tfds build mlvae_mnist --imports=mlvae_jax.data.builders ...`
does the same.
"""

from absl import app
from tensorflow_datasets.scripts.cli import build, cli_utils

import mlvae_jax.data.builders  # noqa: F401  (registers the builders with TFDS)


def main(args: build.Args) -> None:
  args.execute()


if __name__ == "__main__":
  app.run(main, flags_parser=cli_utils.make_flags_parser(
      build.Args, description="tfds build for mlvae_jax's datasets, without TensorFlow"))
