"""MoE load math shared by the planner (`solver/`) and expert placement (`place/`): replication and packing
heuristics (`balance`, `greedy`) and the load-aware factors the planner uses (`imbalance`). Pure numpy, no
CP-SAT; below `solver/` and `place/` in the layer order (tests/test_layers.py).

Load statistics themselves are parsed by `optimizer.place.loads` (a leaf module counted in this layer; it moves
here as `optimizer/moe/loads.py` once the hostile-input work on it has landed)."""
