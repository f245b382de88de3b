"""The group ELBO against the float64 reference, its variants, and its compile behaviour."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlvae_jax import configs, models, objectives
from mlvae_jax.objectives import independence
from tests import reference

CONTENT_DIM, STYLE_DIM, PIXELS = 3, 2, 5


def _objective_config(**overrides) -> ml_collections.ConfigDict:
  config = configs.base_config().objective
  config.update(overrides)
  return config


def _random_problem(seed, n, g, logvar_scale, likelihood):
  """Posteriors, a linear decoder (JAX and float64 twin), data and noise for one batch."""
  rng = np.random.default_rng(seed)
  ids, mask = reference.random_ragged_ids(rng, n, g)
  post = [rng.normal(size=(n, CONTENT_DIM)), rng.uniform(-logvar_scale, logvar_scale, (n, CONTENT_DIM)),
          rng.normal(size=(n, STYLE_DIM)), rng.uniform(-logvar_scale, logvar_scale, (n, STYLE_DIM))]
  weight = rng.normal(size=(CONTENT_DIM + STYLE_DIM, PIXELS)) * 0.3
  bias = rng.normal(size=PIXELS) * 0.1
  obs_logvar = rng.uniform(-1, 1, size=PIXELS)
  x = rng.uniform(size=(n, PIXELS))

  def jax_decode(c, s):
    loc = jnp.concatenate([c, s], -1) @ jnp.float32(weight) + jnp.float32(bias)
    if likelihood == "bernoulli":
      return models.Likelihood(loc)
    return models.Likelihood(loc, jnp.broadcast_to(jnp.float32(obs_logvar), loc.shape))

  def numpy_log_prob(c, s, x_i):
    loc = np.concatenate([c, s]) @ weight + bias
    if likelihood == "bernoulli":
      return reference.bernoulli_log_prob(loc, x_i)
    return reference.gaussian_log_prob(loc, obs_logvar, x_i)

  batch = {"x": jnp.float32(x), "group_ids": jnp.asarray(ids), "mask": jnp.asarray(mask)}
  return post, jax_decode, numpy_log_prob, batch, (x, ids, mask), rng


def _compare(seed, n, g, logvar_scale, likelihood, variant, content_sample, transform=jax.jit,
             single_member_rate=0.0, tied_scores=False):
  """Every reported term of `transform(group_elbo)` against the float64 reference; with a
  single_member_rate, member scores (rounded to one decimal, so tied, if `tied_scores`) and
  group coins are drawn too."""
  post, jax_decode, numpy_log_prob, batch, (x, ids, mask), rng = _random_problem(
      seed, n, g, logvar_scale, likelihood
  )
  slots = n if variant == "vae" else g
  content_rows = slots if content_sample == "group" else n
  noise = objectives.Noise(jnp.float32(rng.normal(size=(content_rows, CONTENT_DIM))),
                           jnp.float32(rng.normal(size=(n, STYLE_DIM))))
  draws = {}
  if single_member_rate:
    score = rng.uniform(size=n)
    noise = noise._replace(member_score=jnp.float32(np.round(score, 1) if tied_scores else score),
                           group_coin=jnp.float32(rng.uniform(size=slots)))
    draws = dict(single_member_rate=single_member_rate, member_score=np.float64(noise.member_score),
                 group_coin=np.float64(noise.group_coin))
  config = _objective_config(variant=variant, content_sample=content_sample,
                             single_member_rate=single_member_rate)
  elbo = transform(lambda p, b, e: objectives.group_elbo(p, jax_decode, b, e, g, config))
  _, metrics = elbo(models.Posterior(*map(jnp.float32, post)), batch, noise)
  ref_ids, ref_g = (np.where(mask, np.arange(n), n), n) if variant == "vae" else (ids, g)
  expected = reference.group_elbo(
      *post, x, ref_ids, mask, ref_g, numpy_log_prob, np.float64(noise.content),
      np.float64(noise.style), content_sample=content_sample, variant=variant, **draws,
  )
  for key, value in expected.items():
    np.testing.assert_allclose(metrics[key], value, rtol=2e-4, atol=2e-3 * (1 + abs(value) * 1e-3), err_msg=key)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 16),
    g=st.integers(1, 6),
    likelihood=st.sampled_from(["bernoulli", "gaussian"]),
    variant=st.sampled_from(objectives.VARIANTS),
    content_sample=st.sampled_from(objectives.CONTENT_SAMPLES),
)
def test_group_elbo_matches_reference(seed, n, g, likelihood, variant, content_sample):
  _compare(seed, n, g, 3.0, likelihood, variant, content_sample)


@pytest.mark.parametrize("logvar_scale", [10.0, 30.0])
def test_group_elbo_with_extreme_logvars(logvar_scale):
  for seed in range(3):
    _compare(seed, 12, 4, logvar_scale, "bernoulli", "mlvae", "group")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 16),
    g=st.integers(1, 6),
    rate=st.sampled_from([0.3, 0.7, 1.0]),
    variant=st.sampled_from(objectives.VARIANTS),
    tied_scores=st.booleans(),
)
def test_single_member_content_matches_reference(seed, n, g, rate, variant, tied_scores):
  """Groups whose coin falls below the rate use one member's posterior; ties go to the lower
  row in both implementations (the reference's argmax)."""
  _compare(seed, n, g, 3.0, "bernoulli", variant, "group", single_member_rate=rate,
           tied_scores=tied_scores)


def test_single_member_content_edge_cases():
  """Rate 1: a group of one is its member; one group spanning the batch takes the top scorer's
  posterior exactly; padding rows (even with the top score) are never chosen."""
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(6, CONTENT_DIM)), rng.uniform(-30, 30, (6, CONTENT_DIM))
  posterior = models.Posterior(jnp.float32(mu), jnp.float32(logvar),
                               jnp.zeros((6, STYLE_DIM)), jnp.zeros((6, STYLE_DIM)))
  score = jnp.float32([0.1, 0.9, 0.3, 0.9, 0.2, 5.0])
  mask = jnp.array([True] * 5 + [False])
  one_mu, one_logvar = objectives.single_member_posterior(
      posterior, jnp.int32([0, 0, 0, 0, 0, 1]), 1, mask, score)
  np.testing.assert_array_equal(one_mu[0], jnp.float32(mu[1]))  # tie at 0.9: the lower row
  np.testing.assert_array_equal(one_logvar[0], jnp.float32(logvar[1]))
  one_mu, one_logvar = objectives.single_member_posterior(
      posterior, jnp.int32([0, 1, 2, 3, 4, 6]), 6, mask, score)
  np.testing.assert_array_equal(one_mu[:5], jnp.float32(mu[:5]))
  np.testing.assert_array_equal(one_mu[5], 0.0)  # the empty slot holds the prior
  np.testing.assert_array_equal(one_logvar[5], 0.0)


def test_single_member_rate_applies_to_training_only():
  """The loss with a step draws member choices; without a step (evaluation) it is the paper's
  objective, bit for bit, whatever the rate."""
  config, model, params = _model_and_config()
  batch = _image_batch([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3], 4)
  rng = jax.random.key(3)
  paper = objectives.make_loss_fn(model, config.copy_and_resolve_references())
  config.objective.single_member_rate = 1.0
  single = objectives.make_loss_fn(model, config)
  chex.assert_trees_all_equal(paper(params, batch, rng), single(params, batch, rng))
  step = jnp.int32(5)
  assert float(single(params, batch, rng, step)[0]) != float(paper(params, batch, rng, step)[0])


def test_single_member_rate_outside_zero_one_is_rejected():
  config = _objective_config(single_member_rate=1.5)
  with pytest.raises(ValueError, match="single_member_rate is 1.5.*in \\[0, 1\\]"):
    objectives.check_objective_config(config)


def test_input_masking_zeroes_that_fraction_and_keeps_the_rest():
  x = jnp.float32(np.random.default_rng(0).uniform(0.1, 1.0, size=(200, 28, 28, 1)))
  masked = objectives.mask_inputs(x, 0.3, jax.random.key(1))
  zeroed = np.asarray(masked == 0.0)
  assert abs(zeroed.mean() - 0.3) < 0.005  # 156,800 draws: sd of the fraction ~0.001
  np.testing.assert_array_equal(np.asarray(masked)[~zeroed], np.asarray(x)[~zeroed])


def test_input_masking_corrupts_the_encoder_input_only_and_in_training_only():
  """Training: the encoder sees the masked batch, the decoder is scored against the clean
  one. Evaluation (no step): the paper's objective, bit for bit."""
  config, model, params = _model_and_config()
  batch = _image_batch([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3], 4)
  rng, step = jax.random.key(3), jnp.int32(5)
  paper = objectives.make_loss_fn(model, config.copy_and_resolve_references())
  config.objective.input_masking = 0.5
  denoising = objectives.make_loss_fn(model, config)
  chex.assert_trees_all_equal(paper(params, batch, rng), denoising(params, batch, rng))

  masked = objectives.mask_inputs(batch["x"], 0.5, jax.random.fold_in(rng, 2))
  posterior = model.apply({"params": params}, masked, method="encode")
  noise = objectives.sample_noise(rng, 12, 4, CONTENT_DIM, STYLE_DIM, "group")
  expected, _ = objectives.group_elbo(
      posterior, lambda c, s: model.apply({"params": params}, c, s, method="decode"), batch,
      noise, 4, config.objective)
  np.testing.assert_allclose(denoising(params, batch, rng, step)[0], expected, rtol=1e-6)
  assert float(denoising(params, batch, rng, step)[0]) != float(paper(params, batch, rng, step)[0])


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_input_masking_outside_zero_one_is_rejected(rate):
  with pytest.raises(ValueError, match=f"input_masking is {rate}.*in \\[0, 1\\)"):
    objectives.check_objective_config(_objective_config(input_masking=rate))


def test_group_of_one_and_one_group_spanning_the_batch():
  for g, ids in [(4, [0, 1, 2, 3]), (1, [0, 0, 0, 0])]:
    post, decode, numpy_log_prob, batch, (x, _, mask), rng = _random_problem(0, 4, g, 3.0, "bernoulli")
    batch["group_ids"] = jnp.asarray(ids, jnp.int32)
    batch["mask"] = jnp.ones(4, bool)
    noise = objectives.Noise(jnp.float32(rng.normal(size=(g, CONTENT_DIM))),
                             jnp.float32(rng.normal(size=(4, STYLE_DIM))))
    _, metrics = objectives.group_elbo(
        models.Posterior(*map(jnp.float32, post)), decode, batch, noise, g, _objective_config()
    )
    expected = reference.group_elbo(*post, x, np.array(ids), np.ones(4, bool), g, numpy_log_prob,
                                    np.float64(noise.content), np.float64(noise.style))
    np.testing.assert_allclose(metrics["elbo"], expected["elbo"], rtol=1e-4)


def test_padding_rows_change_nothing():
  post, decode, _, batch, _, rng = _random_problem(3, 8, 3, 3.0, "gaussian")
  noise = objectives.Noise(jnp.float32(rng.normal(size=(3, CONTENT_DIM))),
                           jnp.float32(rng.normal(size=(8, STYLE_DIM))))
  config = _objective_config()
  _, unpadded = objectives.group_elbo(models.Posterior(*map(jnp.float32, post)), decode, batch, noise, 3, config)
  pad = 5
  padded_post = models.Posterior(*[jnp.concatenate([jnp.float32(p), jnp.full((pad, p.shape[1]), 1e3)]) for p in post])
  padded_batch = {
      "x": jnp.concatenate([batch["x"], jnp.full((pad, PIXELS), 7.0)]),
      "group_ids": jnp.concatenate([jnp.where(batch["mask"], batch["group_ids"], 3), jnp.full(pad, 3, jnp.int32)]),
      "mask": jnp.concatenate([batch["mask"], jnp.zeros(pad, bool)]),
  }
  padded_noise = objectives.Noise(noise.content, jnp.concatenate([noise.style, jnp.ones((pad, STYLE_DIM))]))
  _, padded = objectives.group_elbo(padded_post, decode, padded_batch, padded_noise, 3, config)
  chex.assert_trees_all_close(unpadded, padded, rtol=1e-5)


def test_beta_weights_scale_each_kl_in_the_loss():
  post, decode, _, batch, _, rng = _random_problem(5, 10, 3, 2.0, "bernoulli")
  noise = objectives.Noise(jnp.float32(rng.normal(size=(3, CONTENT_DIM))),
                           jnp.float32(rng.normal(size=(10, STYLE_DIM))))
  posterior = models.Posterior(*map(jnp.float32, post))
  loss, metrics = objectives.group_elbo(
      posterior, decode, batch, noise, 3, _objective_config(beta_content=4.0, beta_style=0.5)
  )
  expected = -(metrics["reconstruction"] - 0.5 * metrics["kl_style"] - 4.0 * metrics["kl_content"])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  _, plain = objectives.group_elbo(posterior, decode, batch, noise, 3, _objective_config())
  np.testing.assert_allclose(metrics["elbo"], plain["elbo"], rtol=1e-6)  # the ELBO itself is unweighted


def _model_and_config(variant="mlvae", likelihood="bernoulli", n=12, g=4):
  config = configs.base_config()
  config.model.hidden = 32
  config.model.content_dim, config.model.style_dim = CONTENT_DIM, STYLE_DIM
  config.model.likelihood = likelihood
  config.objective.variant = variant
  config.data.batch_size, config.data.num_groups = n, g
  model = models.build_model(config.model, (4, 4, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
  return config, model, params


def _image_batch(ids, g, n=12, seed=0):
  rng = np.random.default_rng(seed)
  ids = np.asarray(ids, np.int32)
  return {"x": jnp.float32(rng.uniform(size=(n, 4, 4, 1))), "group_ids": jnp.asarray(ids),
          "mask": jnp.asarray(ids < g)}


class JitVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_group_elbo_matches_the_reference_with_and_without_jit(self):
    for likelihood, variant in [("bernoulli", "mlvae"), ("gaussian", "gvae"), ("bernoulli", "vae")]:
      _compare(7, 12, 4, 3.0, likelihood, variant, "group", transform=self.variant)


@pytest.mark.parametrize("likelihood, bits_per_dim", [
    # A decoder of logits 0 costs exactly 1 bit per dimension for any x in [0, 1] ...
    ("bernoulli", 1.0),
    # ... and one of mean 0, variance 1 costs log2(2 pi e^(x^2)) / 2 bits: x = 0 here.
    ("gaussian", 0.5 * np.log2(2 * np.pi)),
])
def test_bits_per_dim_known_answer(likelihood, bits_per_dim):
  """Groups of 3 and 1 observations of 2x2 pixels, an empty slot and 2 padding rows: 8 pixels
  per valid group on average. Content posteriors N(m, 3) (three members) and N(m, 1) (one)
  pool to N(m, 1) in each group and style posteriors are N(0, 1), so the only KL is the
  content mean's, 0.5 m^2 per group: with m = 1 in one dimension the bits are the decoder's
  plus 0.5 / (8 ln 2)."""
  ids = jnp.array([0, 0, 0, 1, 3, 3], jnp.int32)
  mask = ids < 3
  batch = {"x": jnp.zeros((6, 2, 2, 1)), "group_ids": ids, "mask": mask}
  content_mu = jnp.zeros((6, CONTENT_DIM)).at[:4, 0].set(1.0)
  content_logvar = jnp.broadcast_to(jnp.log(jnp.array([3.0, 3, 3, 1, 1, 1]))[:, None], (6, CONTENT_DIM))
  posterior = models.Posterior(content_mu, content_logvar, jnp.zeros((6, STYLE_DIM)),
                               jnp.zeros((6, STYLE_DIM)))

  def decode(content, style):
    zeros = jnp.zeros((content.shape[0], 2, 2, 1))
    return models.Likelihood(zeros, None if likelihood == "bernoulli" else zeros)

  noise = objectives.Noise(jnp.ones((3, CONTENT_DIM)), jnp.ones((6, STYLE_DIM)))
  _, metrics = objectives.group_elbo(posterior, decode, batch, noise, 3, _objective_config())
  np.testing.assert_allclose(metrics["kl_content"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["kl_style"], 0.0, atol=1e-6)
  np.testing.assert_allclose(metrics["bits_per_dim"], bits_per_dim + 0.5 / (8 * np.log(2)), rtol=1e-6)


def test_loss_compiles_once_for_every_group_structure():
  config, model, params = _model_and_config()
  loss_fn = objectives.make_loss_fn(model, config)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, batch, rng):
    return jax.grad(lambda p: loss_fn(p, batch, rng)[0])(params)

  structures = [
      [0] * 12,
      list(range(4)) + [4] * 8,
      [0, 0, 1, 1, 1, 1, 1, 2, 3, 3, 3, 4],
      [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3],
  ]
  for seed, ids in enumerate(structures):
    grads = step(params, _image_batch(ids, 4, seed=seed), jax.random.key(seed))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))
  chex.clear_trace_counter()


@pytest.mark.parametrize("variant", objectives.VARIANTS)
def test_loss_gradient_through_the_model_matches_finite_differences(variant):
  """The directional derivative of make_loss_fn's loss along random directions (the content
  head alone, then every parameter) equals its float64 central difference: the content
  encoder learns through the pooled posterior and the reconstruction, not the KL alone."""
  config, model, params = _model_and_config(variant=variant)
  batch = _image_batch([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4], 4)
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    params = jax.tree.map(jnp.float64, params)
    batch = dict(batch, x=jnp.float64(batch["x"]))
    loss_fn = objectives.make_loss_fn(model, config)
    loss = jax.jit(lambda p: loss_fn(p, batch, jax.random.key(2))[0])
    grads = jax.grad(loss)(params)
    everywhere = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    content_head = jax.tree.map(jnp.zeros_like, everywhere)
    content_head["encoder"]["_NormalHeads_0"]["content"] = everywhere["encoder"]["_NormalHeads_0"]["content"]
    for direction in (content_head, everywhere):
      h = 1e-6
      shifted = lambda sign: jax.tree.map(lambda p, d: p + sign * h * d, params, direction)  # noqa: E731
      numeric = (loss(shifted(1)) - loss(shifted(-1))) / (2 * h)
      analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
      np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_singleton_groups_reduce_to_a_standard_vae(likelihood):
  """With groups of one, ML-VAE's ELBO is the VAE ELBO on z = [c, s] with the same noise."""
  n = 6
  config, model, params = _model_and_config(likelihood=likelihood, n=n, g=n)
  batch = _image_batch(list(range(n)), n, n=n)
  variables = {"params": params}
  posterior = model.apply(variables, batch["x"], method="encode")
  rng = np.random.default_rng(4)
  eps = rng.normal(size=(n, CONTENT_DIM + STYLE_DIM))
  noise = objectives.Noise(jnp.float32(eps[:, :CONTENT_DIM]), jnp.float32(eps[:, CONTENT_DIM:]))

  def decode(c, s):
    return model.apply(variables, c, s, method="decode")

  _, metrics = objectives.group_elbo(posterior, decode, batch, noise, n, config.objective)

  mu = np.concatenate([posterior.content_mu, posterior.style_mu], 1).astype(np.float64)
  logvar = np.concatenate([posterior.content_logvar, posterior.style_logvar], 1).astype(np.float64)
  z = mu + np.exp(0.5 * logvar) * eps
  out = model.apply(variables, jnp.float32(z[:, :CONTENT_DIM]), jnp.float32(z[:, CONTENT_DIM:]), method="decode")
  x = np.float64(batch["x"])
  vae_elbo = []
  for i in range(n):
    if likelihood == "bernoulli":
      log_px = reference.bernoulli_log_prob(np.float64(out.loc[i]), x[i])
    else:
      log_px = reference.gaussian_log_prob(np.float64(out.loc[i]), np.float64(out.logvar[i]), x[i])
    vae_elbo.append(log_px - reference.kl_to_standard_normal(mu[i], logvar[i]))
  np.testing.assert_allclose(metrics["elbo"], np.mean(vae_elbo), rtol=1e-5)


def test_unknown_variant_is_rejected_with_the_choices():
  config, model, _ = _model_and_config()
  config.objective.variant = "mlvea"
  with pytest.raises(ValueError, match="mlvae"):
    objectives.make_loss_fn(model, config)


def test_single_member_rate_without_member_draws_says_how_to_draw_them():
  post, decode, _, batch, _, rng = _random_problem(1, 6, 2, 1.0, "bernoulli")
  noise = objectives.Noise(jnp.float32(rng.normal(size=(2, CONTENT_DIM))),
                           jnp.float32(rng.normal(size=(6, STYLE_DIM))))
  with pytest.raises(ValueError, match="needs noise.member_score.*sample_noise"):
    objectives.group_elbo(models.Posterior(*map(jnp.float32, post)), decode, batch, noise, 2,
                          _objective_config(single_member_rate=0.5))


@pytest.mark.parametrize("kernel", ["membership", "content"])
def test_style_hsic_group_kernel(kernel):
  """The style-group HSIC's group side: membership, or the kernel of each group's product
  content mean (float64 reference product), even in groups that train on one member's
  content (rate 1); the loss adds it with its weight. An unknown kernel is named."""
  post, decode, _, batch, (_, ids, mask), _ = _random_problem(7, 12, 4, 3.0, "gaussian")
  posterior = models.Posterior(*(jnp.float32(p) for p in post))
  config = _objective_config(single_member_rate=1.0)
  noise = objectives.sample_noise(jax.random.PRNGKey(0), 12, 4, CONTENT_DIM, STYLE_DIM, "group", 1.0)
  paper_loss, paper_metrics = objectives.group_elbo(posterior, decode, batch, noise, 4, config)
  config.update(style_hsic_weight=5.0, style_hsic_group_kernel=kernel)
  loss, metrics = objectives.add_terms(paper_loss, paper_metrics, objectives.TermInputs(
      posterior, batch, batch["group_ids"], 4), config)
  group_content = None
  if kernel == "content":
    product = {g: reference.product_of_normals(post[0][ids == g], post[1][ids == g])[0]
               for g in np.unique(ids[mask])}
    group_content = jnp.float32([product[g] if m else np.full(CONTENT_DIM, 1e4)
                                 for g, m in zip(ids, mask)])
  want = float(independence.style_group_hsic(posterior.style_mu, batch["group_ids"], batch["mask"],
                                             group_content=group_content))
  np.testing.assert_allclose(float(metrics["style_hsic"]), want, rtol=1e-4, atol=1e-8)
  np.testing.assert_allclose(float(loss), float(paper_loss) + 5.0 * want, rtol=1e-5)
  config.style_hsic_group_kernel = "shape"
  with pytest.raises(ValueError, match="style_hsic_group_kernel.*membership.*content"):
    objectives.check_objective_config(config)
