#!/bin/bash
# Trains one experiment on every worker of a Cloud TPU VM (a pod slice or a single host):
# copies this checkout's committed tree to each worker, installs it there with the [tpu]
# extra, and runs launch.py --distributed on all workers at once; on a TPU pod
# jax.distributed.initialize() finds the other workers by itself (docs/cluster.md).
#
#   TPU_NAME=my-v5p-32 ZONE=us-east5-a WORKDIR=/mnt/shared/runs/digits \
#       launch/tpu_vm.sh --config.train.num_steps=10000
#
# Variables: TPU_NAME, ZONE and WORKDIR (required); CONFIG (default experiments/digits.py);
# PROJECT (gcloud's project, default gcloud's own); TPU_PYTHON (default python3.11, installed
# with apt where the image lacks it). Arguments after the script go to launch.py as they are.
# WORKDIR must be a directory every worker sees (a Filestore or NFS mount, a gcsfuse bucket):
# every worker writes its part of each checkpoint there.

set -euo pipefail

TPU_NAME=${TPU_NAME:?set TPU_NAME to the name of the TPU VM}
ZONE=${ZONE:?set ZONE to the zone of the TPU VM}
WORKDIR=${WORKDIR:?set WORKDIR to the run directory, on a filesystem every worker sees}
CONFIG=${CONFIG:-experiments/digits.py}
TPU_PYTHON=${TPU_PYTHON:-python3.11}
gcloud_tpu=(gcloud compute tpus tpu-vm ${PROJECT:+--project="$PROJECT"})

cd "$(dirname "$0")/.."
archive=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$archive"' EXIT
git archive --format=tar.gz -o "$archive" HEAD

launch_args=""  # quoted once more for the workers' shell
for arg in "--config=$CONFIG" "--workdir=$WORKDIR" "$@"; do
  launch_args+=" $(printf %q "$arg")"
done

# Runs on each worker: Python 3.11 if missing, a fresh copy of the project installed with
# [tpu] into a virtual environment kept between launches, then launch.py.
remote="set -e
command -v $TPU_PYTHON >/dev/null || (sudo apt-get -qq update && \
  sudo apt-get -qq install -y $TPU_PYTHON $TPU_PYTHON-venv)
rm -rf ~/mlvae_jax && mkdir ~/mlvae_jax && tar -xzf ~/mlvae_jax.tar.gz -C ~/mlvae_jax
[ -x ~/.venvs/mlvae_jax/bin/python ] || $TPU_PYTHON -m venv ~/.venvs/mlvae_jax
cd ~/mlvae_jax && ~/.venvs/mlvae_jax/bin/pip install -q '.[tpu]'
~/.venvs/mlvae_jax/bin/python launch.py --distributed$launch_args"

"${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:mlvae_jax.tar.gz" --zone="$ZONE" --worker=all
"${gcloud_tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$remote"
