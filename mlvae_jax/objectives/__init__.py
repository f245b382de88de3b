"""The training objective: the paper's group ELBO, its variants and the extra terms the loss sums."""

from mlvae_jax.objectives.loss import (  # noqa: F401
    CONTENT_SAMPLES,
    STYLE_HSIC_GROUP_KERNELS,
    VARIANTS,
    Noise,
    angle_equivariance_term,
    check_objective_config,
    content_posterior,
    gaussian_kl,
    group_elbo,
    iid_groups,
    kl_warmup_scale,
    make_loss_fn,
    mask_inputs,
    sample_noise,
    single_member_posterior,
)
