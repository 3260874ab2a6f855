#!/usr/bin/env bash
# FedAvg, DS-FL, CMFD and Tram-FL on the same data, then a side-by-side table.
set -euo pipefail
cd "$(dirname "$0")"
common=(--set fl.rounds=30 --set decentral.epochs=60 --set decentral.eval_every=5 --set tram.transmissions=100 -q)
meshlearn run base.toml --set name=fedavg --set fl.algorithm=fedavg "${common[@]}"
meshlearn run base.toml --set name=dsfl   --set fl.algorithm=dsfl   "${common[@]}"
meshlearn run base.toml --set name=cmfd   --set fl.algorithm=cmfd   "${common[@]}"
meshlearn run base.toml --set name=tram   --set fl.algorithm=tram   "${common[@]}"
meshlearn runs compare fedavg dsfl cmfd tram --target 0.8
