"""Can the encoder learn the pose warp's angle from the angle-equivariance term alone?

Trains an experiment's encoder (fresh parameters) with nothing but
`objectives.terms.angle_equivariance` on fresh grouped_shapes renders, and reports, on held-out
renders turned by known angles, the term and the slope of the measured angle change against
the turn for each shape (1: the angle turns with the input; 0: it ignores it). It separates
"the term cannot teach this encoder the angle" from "the rest of the objective stops it"
(docs/shapes/README.md). The encoder learns the pose whatever the experiment's
`model.pose_from` (the moment pose needs no learning).

    python tools/angle_learnability.py experiments/shapes.py [--steps=400] [--symmetry=4] \
        [--shapes=heart] [--json=/tmp/angle.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from mlvae_jax.pose import equivariance, warp  # noqa: E402
from mlvae_jax import models, objectives
from mlvae_jax.objectives import terms  # noqa: E402
from mlvae_jax.config_helpers import load_module, split_config_spec  # noqa: E402
from mlvae_jax.data import shapes  # noqa: E402


def learn_angle(spec: str, steps: int, symmetry: int, shape_names: list[str], batch_size: int,
                log_every: int, seed: int = 0) -> list[dict[str, object]]:
  """One row per logged step: the training term and, on 500 held-out renders turned by known
  angles, the term and each shape's slope of (angle change) on (turn)."""
  path, arg = split_config_spec(spec)
  config = load_module(path).get_config(arg)
  config.model.decoder_warp = "rigid_dedicated"
  config.model.pose_from = "encoder"  # the question is a learnt angle; the moment pose is given
  config.objective.angle_equivariance_weight = 1.0
  config.objective.angle_equivariance_symmetry = symmetry
  objectives.check_objective_config(config.objective)
  unknown = sorted(set(shape_names) - set(shapes.SHAPE_NAMES))
  if unknown:
    raise SystemExit(f"--shapes: {unknown[0]!r} is not a grouped_shapes shape; use some of "
                     f"{list(shapes.SHAPE_NAMES)}")
  shape_ids = [shapes.SHAPE_NAMES.index(name) for name in shape_names]
  resolution = config.data.resolution
  model = models.build_model(config.model, (resolution, resolution, 1))
  rng = np.random.default_rng(seed)

  def renders(n: int) -> tuple[jax.Array, np.ndarray]:
    factors = shapes.sample_factors(rng, n)
    factors[:, 0] = rng.choice(shape_ids, size=n)
    return jnp.asarray(shapes.render(factors, resolution).astype(np.float32) / 255), factors

  params = model.init(jax.random.key(seed), renders(2)[0])["params"]
  optimiser = optax.adam(config.optim.learning_rate)
  opt_state = optimiser.init(params)

  def term(p, x, key):
    def encode(images: jax.Array) -> models.Posterior:
      return model.apply({"params": p}, images, method="encode")

    mask = jnp.ones(x.shape[0], bool)
    inputs = objectives.TermInputs(encode(x), {"x": x, "mask": mask}, jnp.zeros_like(mask, jnp.int32),
                                   1, encode=encode, encoder_input=x, rng=key)
    return terms.angle_equivariance(inputs, config.objective)

  @jax.jit
  def train_step(p, state, x, key):
    value, grads = jax.value_and_grad(term)(p, x, key)
    updates, state = optimiser.update(grads, state, p)
    return optax.apply_updates(p, updates), state, value

  @jax.jit
  def angles(p, x, turn):
    encode = lambda images: model.apply({"params": p}, images, method="encode")
    before, after = encode(x), encode(equivariance.turn_about_centroids(x, turn))
    return (warp.dedicated_angle_posterior(before.style_mu, before.style_logvar)[0],
            warp.dedicated_angle_posterior(after.style_mu, after.style_logvar)[0])

  held_out, held_factors = renders(500)
  max_turn = config.objective.angle_equivariance_max_turn
  held_turn = jnp.asarray(rng.uniform(-max_turn, max_turn, 500).astype(np.float32))
  rows = []
  for step in range(1, steps + 1):
    params, opt_state, value = train_step(params, opt_state, renders(batch_size)[0],
                                          jax.random.key(step))
    if step % log_every and step != steps:
      continue
    held_value = float(term(params, held_out, jax.random.key(0)))
    before, after = (np.asarray(a, np.float64) for a in angles(params, held_out, held_turn))
    change = np.angle(np.exp(1j * symmetry * (after - before))) / symmetry  # modulo 2 pi / K
    row = {"step": step, "train_term": float(value), "held_out_term": held_value}
    for name, shape_id in zip(shape_names, shape_ids):
      rows_of_shape = held_factors[:, 0] == shape_id
      row[f"slope_{name}"] = float(np.polyfit(np.asarray(held_turn)[rows_of_shape],
                                              change[rows_of_shape], 1)[0])
    rows.append(row)
  return rows


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("spec", help="experiment config, e.g. experiments/shapes.py")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--symmetry", type=int, default=4, help="objective.angle_equivariance_symmetry")
  parser.add_argument("--shapes", default=",".join(shapes.SHAPE_NAMES))
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--json", default="", help="also write the rows here")
  args = parser.parse_args(argv)
  rows = learn_angle(args.spec, args.steps, args.symmetry, args.shapes.split(","),
                     args.batch_size, args.log_every)
  print(" | ".join(rows[0]))
  for row in rows:
    print(" | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
