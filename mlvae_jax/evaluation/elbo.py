"""`elbo`: the group ELBO terms of a split, with the training objective and batch shapes.

Every process runs it on the sharded parameters (like a train step), over the same batches
and noise at every call, so values are comparable across steps and keep-best is fair:
one epoch of the split (padded, so every example counts; `max_batches` caps it), each
batch's terms weighted by its number of groups. `evals.val` is this type on 'validation'.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mlvae_jax.training.feed import host
from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext

WEIGHT = "num_groups"  # the loss's count of valid groups: the weight of a batch's terms
_add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))  # one dispatch per batch


@register("elbo")
class HeldoutElbo(Evaluator):
  """Group-weighted means of every term the loss reports (elbo, reconstruction, kl_style,
  kl_content, bits_per_dim, loss)."""

  on_mesh = True

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    setup = ctx.setup
    self.iterator = host.make_iterator(ctx.config, settings.split, num_epochs=1)
    self.start = self.iterator.get_state()

    def weighted_sums(params: Any, batch: dict, rng: jax.Array) -> tuple[dict, jax.Array]:
      metrics = setup.loss_fn(params, batch, rng)[1]
      weight = metrics.pop(WEIGHT)
      return {k: v * weight for k, v in metrics.items()}, weight

    self.step = jax.jit(
        weighted_sums,
        in_shardings=(setup.state_shardings.params, setup.batch_sharding, setup.replicated),
        out_shardings=setup.replicated,
    )
    n = ctx.config.data.batch_size
    batch = {
        "x": jax.ShapeDtypeStruct((n, *setup.observation_shape), jnp.float32),
        "group_ids": jax.ShapeDtypeStruct((n,), jnp.int32),
        "mask": jax.ShapeDtypeStruct((n,), jnp.bool_),
    }
    sums, _ = jax.eval_shape(weighted_sums, setup.abstract_state.params, batch, jax.random.key(0))
    self.metric_names = tuple(sorted(sums))

  def run(self, params: Any) -> dict[str, float]:
    self.iterator.set_state(self.start)
    rng = jax.random.key(self.ctx.config.seed + 1)
    totals, weight = None, None
    batches = itertools.islice(self.iterator, self.settings.max_batches or None)
    for index, host_batch in enumerate(batches):
      batch = host.device_batch(self.ctx.config, self.ctx.setup.mesh, host_batch)
      sums, w = self.step(params, batch, jax.random.fold_in(rng, index))
      totals, weight = (sums, w) if totals is None else _add((totals, weight), (sums, w))
    totals, weight = jax.device_get((totals, weight))
    return {k: float(v) / float(weight) for k, v in totals.items()}

