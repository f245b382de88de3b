"""Mutation check: the tests of the maths must fail on each known defect of ML-VAE ports and
on a gradient defect of each term of the objective's table.

Copies the repository (tracked files and untracked ones git does not ignore) to a temporary
directory, applies one mutation at a time to the copy, runs the guarding test files there
and prints a table. Exits 0 only if the unmutated copy passes and every mutation fails.

    python tools/mutation_check.py [TEST_FILE ...]

Not collected by pytest (it lives outside tests/); it runs the test files once per mutation
and once unmutated, so expect several minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The term tests first: they are quick, and a mutated term fails there.
TEST_FILES = ("tests/objectives/test_term_gradients.py", "tests/objectives/test_reverse_cycle.py",
              "tests/objectives/test_gradients.py", "tests/test_groups.py",
              "tests/objectives/test_objectives.py")


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str
  old: str
  new: str


MUTATIONS = (
    Mutation(
        "stop_gradient on the precision weights of the pooled mean",
        "mlvae_jax/groups.py",
        "weights = jnp.exp(jnp.where(mask[:, None], log_weights, -jnp.inf))",
        "weights = jax.lax.stop_gradient(jnp.exp(jnp.where(mask[:, None], log_weights, -jnp.inf)))",
    ),
    Mutation(
        "stop_gradient on the sampled content",
        "mlvae_jax/objectives/elbo.py",
        "  style = posterior.style_mu + ",
        "  content = jax.lax.stop_gradient(content)\n  style = posterior.style_mu + ",
    ),
    Mutation(
        "harmonic-mean merged variance (n times the product's)",
        "mlvae_jax/groups.py",
        "  return jnp.where(has_members, group_mu, 0.0), group_logvar\n",
        "  sizes = jnp.maximum(group_sizes(group_ids, num_groups, mask), 1)\n"
        "  return jnp.where(has_members, group_mu, 0.0), group_logvar + jnp.log(sizes)[:, None]\n",
    ),
    Mutation(
        "content KL charged once per member",
        "mlvae_jax/objectives/elbo.py",
        "content_kl = jnp.sum(jnp.where(valid_group, kl_content, 0.0)) / num_valid",
        "content_kl = per_group_mean(groups.gather_to_members(kl_content, group_ids))",
    ),
    # One defect of each term of the objective's term table (objectives/terms.py); each
    # leaves the term's value as it is, so only its gradient test can see it.
    Mutation(
        "HSIC bandwidth not held constant in the gradient (both HSIC terms)",
        "mlvae_jax/objectives/independence.py",
        "bandwidth = jax.lax.stop_gradient(jnp.maximum(mean_sq_dist, 1e-6))",
        "bandwidth = jnp.maximum(mean_sq_dist, 1e-6)",
    ),
    Mutation(
        "style HSIC: the group content kernel not held constant",
        "mlvae_jax/objectives/independence.py",
        "_code_kernel(jax.lax.stop_gradient(group_content), valid,",
        "_code_kernel(group_content, valid,",
    ),
    Mutation(
        "content-style HSIC: the group means of the residual detached",
        "mlvae_jax/objectives/independence.py",
        "member_means = groups.gather_to_members(sums / jnp.maximum(sizes, 1.0)[:, None], group_ids)",
        "member_means = jax.lax.stop_gradient(\n"
        "      groups.gather_to_members(sums / jnp.maximum(sizes, 1.0)[:, None], group_ids))",
    ),
    Mutation(
        "content contrast: the softmax's normaliser detached",
        "mlvae_jax/objectives/contrast.py",
        "log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)",
        "log_prob = logits - jax.lax.stop_gradient(jax.nn.logsumexp(logits, axis=1, keepdims=True))",
    ),
    Mutation(
        "angle equivariance: the turned input's posterior detached",
        "mlvae_jax/objectives/terms.py",
        "turned = inputs.encode(equivariance.turn_about_centroids(inputs.encoder_input, turn))",
        "turned = jax.lax.stop_gradient(\n"
        "      inputs.encode(equivariance.turn_about_centroids(inputs.encoder_input, turn)))",
    ),
    Mutation(
        "reverse cycle: the decoded images detached (no gradient to the decoder)",
        "mlvae_jax/objectives/terms.py",
        "drawn = [models.mean_observation(inputs.decode(c, style)) for c in (content, content[partner])]",
        "drawn = [jax.lax.stop_gradient(models.mean_observation(inputs.decode(c, style)))\n"
        "           for c in (content, content[partner])]",
    ),
)


def copy_repository(destination: pathlib.Path) -> None:
  """The files git would commit (tracked, or untracked and not ignored)."""
  listed = subprocess.run(
      ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
      cwd=ROOT, check=True, capture_output=True, text=True).stdout
  for relative in filter(None, listed.split("\0")):
    source = ROOT / relative
    if source.is_file():
      target = destination / relative
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, target)


def apply(mutation: Mutation, copy: pathlib.Path) -> None:
  path = copy / mutation.path
  text = path.read_text()
  if text.count(mutation.old) != 1:
    raise SystemExit(f"mutation '{mutation.name}': its target text occurs {text.count(mutation.old)} "
                     f"times in {mutation.path} (expected once); update tools/mutation_check.py")
  path.write_text(text.replace(mutation.old, mutation.new))


def run_tests(copy: pathlib.Path, test_files: list[str]) -> tuple[bool, float, str]:
  """(passed, seconds, what pytest said: the first failing test, else its last line),
  importing the copy's mlvae_jax."""
  env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
  probe = subprocess.run([sys.executable, "-c", "import mlvae_jax; print(mlvae_jax.__file__)"],
                         cwd=copy, env=env, capture_output=True, text=True, check=True)
  if not probe.stdout.startswith(str(copy)):
    raise SystemExit(f"the copy imports mlvae_jax from {probe.stdout.strip()}, not from {copy}")
  start = time.perf_counter()
  result = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "0",
       *test_files], cwd=copy, env=env, capture_output=True, text=True)
  lines = result.stdout.strip().splitlines() or [result.stderr.strip()]
  failed = [line.split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]
  return result.returncode == 0, time.perf_counter() - start, (failed or lines)[-1]


def main(test_files: list[str]) -> int:
  rows = []
  for mutation in (None, *MUTATIONS):
    with tempfile.TemporaryDirectory(prefix="mlvae_mutation_") as tmp:
      copy = pathlib.Path(tmp)
      copy_repository(copy)
      if mutation:
        apply(mutation, copy)
      passed, seconds, summary = run_tests(copy, test_files)
    name = mutation.name if mutation else "(none: the code as it is)"
    expected = passed if mutation is None else not passed
    rows.append((name, "passed" if passed else "FAILED", "yes" if expected else "NO", seconds, summary))
    print(f"{name}: {rows[-1][1]} in {seconds:.0f} s ({summary})", file=sys.stderr)
  print(f"tests: {' '.join(test_files)}\n")
  print("| mutation | suite | as required | seconds | pytest (-x: the first failure) |")
  print("|---|---|---|---|---|")
  for name, outcome, ok, seconds, summary in rows:
    print(f"| {name} | {outcome} | {ok} | {seconds:.0f} | {summary} |")
  return 0 if all(row[2] == "yes" for row in rows) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:] or list(TEST_FILES)))
