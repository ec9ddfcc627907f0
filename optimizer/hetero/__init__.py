"""Mixed hardware: plans over the GPUs people actually have (inventory -> per-layer integer instance -> CP-SAT
assignment -> independent float check), and the cheapest additions to buy."""

from optimizer.hetero.api import MixedResult, cheapest_mixed, describe

__all__ = ["MixedResult", "cheapest_mixed", "describe"]
