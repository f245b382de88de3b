"""The training loss: the paper's group ELBO (elbo.py) plus each weighted term of terms.TERMS,
with the input masking and KL warm-up that shape training only."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from mlvae_jax.configs import VARIANTS, check_choice
from mlvae_jax.models import MLVAE, Likelihood, Posterior
from mlvae_jax.objectives.elbo import (CONTENT_SAMPLES, Batch, group_elbo, sample_noise,
                                       variant_groups)
from mlvae_jax.objectives.terms import TERMS, TermInputs

STYLE_HSIC_GROUP_KERNELS = ("membership", "content")


def check_objective_config(objective_config: ml_collections.ConfigDict) -> None:
  """Rejects unknown variants and out-of-range settings early, with the valid choices."""
  check_choice("objective.variant", objective_config.variant, VARIANTS)
  check_choice("objective.content_sample", objective_config.content_sample, CONTENT_SAMPLES)
  check_choice("objective.style_hsic_group_kernel", objective_config.style_hsic_group_kernel,
               STYLE_HSIC_GROUP_KERNELS)
  rate = objective_config.single_member_rate
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"objective.single_member_rate is {rate}; it is a probability: set it "
                     "in [0, 1] (0 is the paper's objective)")
  if objective_config.content_contrast_weight < 0 or objective_config.content_contrast_temperature <= 0:
    raise ValueError(
        f"objective.content_contrast_weight is {objective_config.content_contrast_weight} and "
        f"objective.content_contrast_temperature {objective_config.content_contrast_temperature}; "
        "set the weight >= 0 (0 is the paper's objective) and the temperature > 0")
  symmetry = objective_config.angle_equivariance_symmetry
  max_turn = objective_config.angle_equivariance_max_turn
  if (objective_config.angle_equivariance_weight < 0 or not isinstance(symmetry, int)
      or symmetry < 1 or not 0.0 < max_turn <= math.pi / max(symmetry, 1)):
    raise ValueError(
        f"objective.angle_equivariance_weight is {objective_config.angle_equivariance_weight}, "
        f"angle_equivariance_symmetry {symmetry!r} and angle_equivariance_max_turn {max_turn}; "
        "set the weight >= 0 (0 is the paper's objective), the symmetry to an integer >= 1 (the "
        "data's largest rotational symmetry order, 1 for none) and the max turn in "
        "(0, pi / symmetry] radians, so a turn is never mistaken for a symmetry")
  for term in TERMS:
    weight = objective_config[term.weight_key]
    if weight < 0:
      raise ValueError(f"objective.{term.weight_key} is {weight}; it weighs a penalty: "
                       "set it >= 0 (0 is the paper's objective)")
  masking = objective_config.input_masking
  if not 0.0 <= masking < 1.0:
    raise ValueError(f"objective.input_masking is {masking}; it is the fraction of input values "
                     "zeroed: set it in [0, 1) (0 is the paper's objective)")


def mask_inputs(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """`x` with each value zeroed with probability `rate` (masking noise, Vincent et al. 2008),
  unscaled: a zeroed pixel reads as background, as in the denoising VAE of Im et al. 2017."""
  return jnp.where(jax.random.bernoulli(rng, 1.0 - rate, x.shape), x, jnp.zeros_like(x))


def kl_warmup_scale(step: jax.Array | None, warmup_steps: int) -> jax.Array | float:
  """Linear KL warm-up (Bowman et al. 2016; Sonderby et al. 2016): 0 at step 0, 1 from
  `warmup_steps` on; 1 when there is no step (evaluation) or no warm-up."""
  if step is None or not warmup_steps:
    return 1.0
  return jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def add_terms(
    loss: jax.Array, metrics: dict[str, jax.Array], inputs: TermInputs,
    objective_config: ml_collections.ConfigDict,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`loss` plus each term of TERMS times its weight, in the table's order, and `metrics` with
  each term's value and the new loss. A weight of 0 is a static switch: nothing is traced."""
  metrics = dict(metrics)
  for term in TERMS:
    weight = objective_config[term.weight_key]
    if weight:
      metrics[term.metric] = term.fn(inputs, objective_config)
      loss = loss + weight * metrics[term.metric]
  metrics["loss"] = loss
  return loss, metrics


def check_terms_fit_model(model: MLVAE, config: ml_collections.ConfigDict) -> None:
  """Rejects terms whose settings need a model the config does not build."""
  if config.objective.angle_equivariance_weight and config.model.decoder_warp != "rigid_dedicated":
    raise ValueError(
        "objective.angle_equivariance_weight > 0 trains the angle of "
        f"model.decoder_warp='rigid_dedicated', but the warp is {config.model.decoder_warp!r}; "
        "set --config.model.decoder_warp=rigid_dedicated or the weight to 0")
  if config.objective.content_style_hsic_pose and model.canonical_harmonics is None:
    raise ValueError(
        "objective.content_style_hsic_pose=True gives the content-style HSIC the moment pose, "
        f"but model.pose_from is {config.model.pose_from!r}: with a learned pose the pose "
        "dimensions are already among the style it takes; set --config.model.pose_from=moments "
        "(with decoder_warp='rigid_dedicated') or content_style_hsic_pose=False")


def make_loss_fn(
    model: MLVAE, config: ml_collections.ConfigDict
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """`loss_fn(params, batch, rng, step=None) -> (loss, metrics)` for the configured model and
  objective; `step` drives the KL warm-up. Without a step (evaluation) q(C_G | X_G) is always
  the product and the encoder sees clean inputs: `single_member_rate` and `input_masking` shape
  training only, held-out ELBOs stay the paper's."""
  check_objective_config(config.objective)
  check_terms_fit_model(model, config)
  training_config = config.objective
  evaluation_config = ml_collections.ConfigDict(training_config.to_dict())
  evaluation_config.single_member_rate = 0.0
  evaluation_config.input_masking = 0.0
  num_groups = config.data.num_groups
  content_dim, style_dim = config.model.content_dim, config.model.style_dim
  pose_harmonics = model.canonical_harmonics or ()

  def loss_fn(
      params: dict, batch: Batch, rng: jax.Array, step: jax.Array | None = None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`step` (training only) sets the KL warm-up; without it the betas apply in full."""
    objective_config = evaluation_config if step is None else training_config
    variables = {"params": params}
    encoder_input = batch["x"]
    if objective_config.input_masking:  # static: the paper's objective draws nothing extra
      encoder_input = mask_inputs(encoder_input, objective_config.input_masking,
                                  jax.random.fold_in(rng, 2))

    def encode(x: jax.Array) -> Posterior:
      return model.apply(variables, x, method="encode")

    def decode(content: jax.Array, style: jax.Array) -> Likelihood:
      return model.apply(variables, content, style, method="decode")

    posterior = encode(encoder_input)
    n = batch["x"].shape[0]
    slots = n if objective_config.variant == "vae" else num_groups
    noise = sample_noise(rng, n, slots, content_dim, style_dim, objective_config.content_sample,
                         objective_config.single_member_rate)
    loss, metrics = group_elbo(posterior, decode, batch, noise, num_groups, objective_config,
                               kl_warmup_scale(step, objective_config.kl_warmup_steps))
    group_ids, term_groups = variant_groups(batch["group_ids"], batch["mask"], num_groups,
                                            objective_config.variant)
    inputs = TermInputs(posterior, batch, group_ids, term_groups, pose_harmonics, encode, decode,
                        encoder_input, rng)
    return add_terms(loss, metrics, inputs, objective_config)

  return loss_fn
