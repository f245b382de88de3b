"""Test setup: 8 host CPU devices, set before JAX is imported anywhere, and the hypothesis
profile.

The profile comes from MLVAE_HYPOTHESIS_PROFILE: 'ci' (the default) derandomises every
property test, so a run repeats exactly and a failure reproduces by running it again;
'explore' draws fresh examples each run. Both print the `@reproduce_failure` blob of a
failing example.
"""

import os

from hypothesis import settings

os.environ["XLA_FLAGS"] = " ".join(
    flag for flag in os.environ.get("XLA_FLAGS", "").split()
    if not flag.startswith("--xla_force_host_platform_device_count")
) + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HYPOTHESIS_PROFILE_VARIABLE = "MLVAE_HYPOTHESIS_PROFILE"
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
settings.register_profile("explore", print_blob=True, deadline=None)
HYPOTHESIS_PROFILE = os.environ.get(HYPOTHESIS_PROFILE_VARIABLE, "ci")
settings.load_profile(HYPOTHESIS_PROFILE)


def pytest_report_header(config) -> str:
  return f"hypothesis profile '{HYPOTHESIS_PROFILE}' (set {HYPOTHESIS_PROFILE_VARIABLE}=ci|explore)"
