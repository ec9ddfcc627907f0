"""`rigopt cheapest`: enumerate candidates, estimate them in floats, choose with CP-SAT, re-check in floats."""
