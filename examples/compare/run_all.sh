#!/usr/bin/env bash
# FedAvg, DS-FL, CMFD and Tram-FL on the same data (base.toml), then a side-by-side table.
# Runs go where `meshlearn runs list` looks from where you call this ($MESHLEARN_RUNS or ./runs).
set -euo pipefail
base="$(dirname "$0")/base.toml"
meshlearn run "$base" -q --set name=fedavg --set fl.algorithm=fedavg --set fl.rounds=30
meshlearn run "$base" -q --set name=dsfl   --set fl.algorithm=dsfl   --set fl.rounds=30
meshlearn run "$base" -q --set name=cmfd   --set fl.algorithm=cmfd   --set decentral.epochs=60 --set decentral.eval_every=5
meshlearn run "$base" -q --set name=tram   --set fl.algorithm=tram   --set tram.transmissions=100
meshlearn runs compare fedavg dsfl cmfd tram --target 0.8
