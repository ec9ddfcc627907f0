"""Fidelity: rigopt's estimates checked against published measurements.

`cases` loads the measurement rows (measurements/measurements.yaml for weights / KV / GGUF sizes,
measurements/speed_measurements.yaml for decode and prefill tok/s), `predict` reproduces each row with the same
functions `rigopt estimate` uses, `calibrate` fits the speed efficiency factors on the `fit` split, and `report`
builds the table and per-metric summary. The physics layer (optimizer/estimate) never imports this package.
"""
