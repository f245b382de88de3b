"""The reverse-cycle term against a float64 NumPy reference (value and gradients by central
differences), on a ragged batch with padding rows, and its known answers: zero when the
style encoder cannot see content, and when no pair spans two groups."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mlvae_jax import configs, models
from mlvae_jax.objectives import loss as loss_lib
from mlvae_jax.objectives import terms
from tests.objectives.test_gradients import assert_gradients_close, central_differences

GROUP_IDS = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4, 4], np.int32)  # slot 2 a group of one
NUM_GROUPS = 4
MASK = GROUP_IDS < NUM_GROUPS  # the last two rows are padding
N, CONTENT_DIM, STYLE_DIM, HIDDEN, PIXELS = len(GROUP_IDS), 2, 3, 4, 5
RNG = jax.random.key(7)


def _params(rng: np.random.Generator) -> dict[str, np.ndarray]:
  return {"dec_w1": rng.normal(size=(CONTENT_DIM + STYLE_DIM, HIDDEN)),
          "dec_b1": rng.normal(size=HIDDEN) * 0.1,
          "dec_w2": rng.normal(size=(HIDDEN, PIXELS)),
          "enc_w": rng.normal(size=(PIXELS, STYLE_DIM)),
          "enc_b": rng.normal(size=STYLE_DIM) * 0.1}


def _decode(params, content, style, xp):
  """Bernoulli logits of a one-hidden-layer tanh decoder (numpy or jax.numpy as `xp`)."""
  z = xp.concatenate([content, style], axis=-1)
  return xp.tanh(z @ params["dec_w1"] + params["dec_b1"]) @ params["dec_w2"]


def _style(params, x, xp):
  return xp.tanh(x @ params["enc_w"] + params["enc_b"])


def _draws() -> tuple[np.ndarray, np.ndarray]:
  """The term's own draws (the pairing is not under test), as the float64 run makes them."""
  with jax.enable_x64(True):
    partner, style = terms.reverse_cycle_pairs(jax.random.fold_in(RNG, 5), N, STYLE_DIM)
  return np.asarray(partner), np.asarray(style, np.float64)


def reference(content_mu: np.ndarray, group_ids: np.ndarray = GROUP_IDS,
              mask: np.ndarray = MASK, **params: np.ndarray) -> float:
  """Float64, pair by pair."""
  partner, style = _draws()
  total = count = 0.0
  for i in range(N):
    j = partner[i]
    if not (mask[i] and mask[j] and group_ids[i] != group_ids[j]):
      continue
    images = [1 / (1 + np.exp(-_decode(params, content_mu[k], style[i], np))) for k in (i, j)]
    style_a, style_b = (_style(params, x, np) for x in images)
    total += float(np.sum((style_a - style_b) ** 2))
    count += 1
  return total / max(count, 1.0)


def _term(content_mu, params, group_ids=GROUP_IDS, mask=MASK):
  posterior = models.Posterior(content_mu, jnp.zeros_like(content_mu),
                               jnp.zeros((N, STYLE_DIM), content_mu.dtype),
                               jnp.zeros((N, STYLE_DIM), content_mu.dtype))
  inputs = terms.TermInputs(
      posterior, {"x": jnp.zeros((N, PIXELS)), "group_ids": jnp.asarray(group_ids),
                  "mask": jnp.asarray(mask)},
      jnp.asarray(group_ids), NUM_GROUPS,
      encode=lambda x: models.Posterior(None, None, _style(params, x, jnp), None),
      decode=lambda c, s: models.Likelihood(_decode(params, c, s, jnp)), rng=RNG)
  return terms.reverse_cycle(inputs, ml_collections.ConfigDict())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_and_gradients_match_the_float64_reference(seed):
  rng = np.random.default_rng(seed)
  arrays = {"content_mu": rng.normal(size=(N, CONTENT_DIM)), **_params(rng)}
  arrays["content_mu"][~MASK] = 50.0  # padding rows unlike any real row
  with jax.enable_x64(True):
    def value(content_mu, params):
      return _term(content_mu, params)

    got = float(value(arrays["content_mu"], {k: v for k, v in arrays.items() if k != "content_mu"}))
    grads = jax.grad(lambda a: value(a["content_mu"], {k: v for k, v in a.items()
                                                       if k != "content_mu"}))(arrays)
  np.testing.assert_allclose(got, reference(**arrays), rtol=1e-10)
  assert got > 0
  actual = {k: np.asarray(v) for k, v in grads.items()}
  assert_gradients_close(actual, central_differences(lambda **a: reference(**a), arrays))
  assert not actual["content_mu"][~MASK].any()  # padding rows get no gradient


def test_zero_when_every_row_is_one_group_or_padding():
  rng = np.random.default_rng(3)
  params = {k: jnp.asarray(v, jnp.float32) for k, v in _params(rng).items()}
  content = jnp.asarray(rng.normal(size=(N, CONTENT_DIM)), jnp.float32)
  assert float(_term(content, params, group_ids=np.zeros(N, np.int32), mask=np.ones(N, bool))) == 0.0
  assert float(_term(content, params, mask=np.zeros(N, bool))) == 0.0


def test_zero_when_the_style_encoder_cannot_see_what_content_draws():
  """Content writes the first pixels, style the rest; a style encoder reading only the rest
  pays nothing, one that also reads a content pixel pays."""
  rng = np.random.default_rng(4)
  params = {k: jnp.asarray(v, jnp.float32) for k, v in _params(rng).items()}
  content = jnp.asarray(rng.normal(size=(N, CONTENT_DIM)), jnp.float32)
  split_decoder = dict(params)
  w1 = np.zeros((CONTENT_DIM + STYLE_DIM, HIDDEN), np.float32)
  w1[:CONTENT_DIM, :2] = rng.normal(size=(CONTENT_DIM, 2))
  w1[CONTENT_DIM:, 2:] = rng.normal(size=(STYLE_DIM, HIDDEN - 2))
  w2 = np.zeros((HIDDEN, PIXELS), np.float32)
  w2[:2, :2] = rng.normal(size=(2, 2))
  w2[2:, 2:] = rng.normal(size=(HIDDEN - 2, PIXELS - 2))
  split_decoder.update(dec_w1=jnp.asarray(w1), dec_w2=jnp.asarray(w2))
  blind = np.asarray(params["enc_w"]).copy()
  blind[:2] = 0.0
  assert float(_term(content, {**split_decoder, "enc_w": jnp.asarray(blind)})) == pytest.approx(0.0, abs=1e-12)
  assert float(_term(content, split_decoder)) > 1e-3


def test_the_loss_adds_it_with_its_weight_and_reports_it():
  config = configs.base_config()
  config.model.hidden, config.model.content_dim, config.model.style_dim = 16, 2, 3
  config.data.batch_size, config.data.num_groups = 8, 4
  model = models.build_model(config.model, (4, 4, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
  batch = {"x": jnp.asarray(np.random.default_rng(5).uniform(size=(8, 4, 4, 1)), jnp.float32),
           "group_ids": jnp.asarray([0, 0, 1, 1, 2, 2, 3, 3], jnp.int32),
           "mask": jnp.ones(8, bool)}
  paper_loss, paper = loss_lib.make_loss_fn(model, config)(params, batch, RNG)
  config.objective.reverse_cycle_weight = 10.0
  loss, metrics = loss_lib.make_loss_fn(model, config)(params, batch, RNG)
  assert "reverse_cycle" not in paper and float(metrics["reverse_cycle"]) > 0
  np.testing.assert_allclose(float(loss), float(paper_loss) + 10.0 * float(metrics["reverse_cycle"]),
                             rtol=1e-5)
