"""The MLP ML-VAE of experiments/mnist.py:paper_groups_of_8 in PyTorch, for speed comparisons only.

Same layers (pixels -> hidden tanh -> content and style heads; content + style -> hidden
tanh -> pixel logits), the same objective (exact product of the members' content posteriors
computed in log space, one content draw per group, Bernoulli likelihood, style KL per member,
content KL per group, averaged over valid groups) and Adam, so a step does the work of
mlvae_jax's step. Not tested for numbers: it only has to cost the same.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TorchMLVAE(nn.Module):
  def __init__(self, pixels: int, hidden: int, content_dim: int, style_dim: int):
    super().__init__()
    self.encoder = nn.Linear(pixels, hidden)
    self.content = nn.Linear(hidden, 2 * content_dim)
    self.style = nn.Linear(hidden, 2 * style_dim)
    self.decoder_hidden = nn.Linear(content_dim + style_dim, hidden)
    self.decoder_out = nn.Linear(hidden, pixels)

  def loss(self, x: torch.Tensor, group_ids: torch.Tensor, mask: torch.Tensor,
           num_groups: int) -> torch.Tensor:
    """Minus the mean group ELBO; padding rows (mask False) carry any id in [0, G)."""
    h = torch.tanh(self.encoder(x))
    c_mu, c_logvar = self.content(h).chunk(2, dim=-1)
    s_mu, s_logvar = self.style(h).chunk(2, dim=-1)
    valid = mask[:, None]
    index = group_ids[:, None].expand_as(c_mu)
    neg = torch.where(valid, -c_logvar, torch.full_like(c_logvar, -torch.inf))
    group_max = torch.full((num_groups, c_mu.shape[1]), -torch.inf,
                           device=x.device).scatter_reduce(0, index, neg, "amax")
    shift = torch.where(torch.isfinite(group_max), group_max, 0.0).detach()
    total = torch.zeros_like(shift).index_add(
        0, group_ids, torch.where(valid, torch.exp(neg - shift[group_ids]), 0.0))
    has_members = total > 0
    group_logvar = torch.where(has_members, -(torch.log(torch.where(has_members, total, 1.0))
                                              + shift), 0.0)
    weights = torch.where(valid, torch.exp(group_logvar[group_ids] - c_logvar), 0.0)
    group_mu = torch.zeros_like(shift).index_add(0, group_ids, weights * c_mu)
    noise = torch.randn_like(group_mu)
    content = (group_mu + torch.exp(0.5 * group_logvar) * noise)[group_ids]
    style = s_mu + torch.exp(0.5 * s_logvar) * torch.randn_like(s_mu)
    logits = self.decoder_out(torch.tanh(self.decoder_hidden(torch.cat([content, style], -1))))
    log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl_style = 0.5 * (torch.exp(s_logvar) + s_mu**2 - 1 - s_logvar).sum(-1)
    kl_content = 0.5 * (torch.exp(group_logvar) + group_mu**2 - 1 - group_logvar).sum(-1)
    sizes = torch.zeros(num_groups, device=x.device).index_add(0, group_ids, mask.float())
    num_valid = (sizes > 0).sum().clamp(min=1)
    member_terms = torch.where(mask, log_px - kl_style, 0.0).sum()
    return -(member_terms - torch.where(sizes > 0, kl_content, 0.0).sum()) / num_valid


def make_step(model: TorchMLVAE, learning_rate: float, compiled: bool = False):
  """`step(x, group_ids, mask, num_groups) -> loss`: one Adam step; `compiled`: the loss
  (forward and backward) through torch.compile, the optimiser's update as PyTorch runs it."""
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
  loss_fn = torch.compile(model.loss) if compiled else model.loss

  def step(x, group_ids, mask, num_groups):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(x, group_ids, mask, num_groups)
    loss.backward()
    optimizer.step()
    return loss

  return step
