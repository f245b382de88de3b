"""The training objective: the paper's group ELBO and its variants (elbo.py), the extra terms
the loss adds to it (terms.py, one table) and the loss that sums them (loss.py)."""

from mlvae_jax.objectives.elbo import (  # noqa: F401
    CONTENT_SAMPLES,
    Noise,
    content_posterior,
    gaussian_kl,
    group_elbo,
    iid_groups,
    sample_noise,
    single_member_posterior,
    variant_groups,
)
from mlvae_jax.objectives.loss import (  # noqa: F401
    STYLE_HSIC_GROUP_KERNELS,
    add_terms,
    check_objective_config,
    check_terms_fit_model,
    kl_warmup_scale,
    make_loss_fn,
    mask_inputs,
)
from mlvae_jax.objectives.terms import TERMS, Term, TermInputs  # noqa: F401
from mlvae_jax.configs import VARIANTS  # noqa: F401
