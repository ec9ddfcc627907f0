"""Node lookup by accelerator (the physics' Device adapter is estimate.deployment.device_of)."""

from __future__ import annotations

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.hardware_schema import NodeType


def nodes_for(acc_key: str) -> list[NodeType]:
    hw = load_hardware()
    return sorted((n for n in hw.nodes.values() if n.accelerator == acc_key),
                  key=lambda n: (-n.accelerators_per_node, n.key))


def node_for(acc_key: str, gpus: int) -> NodeType | None:
    """The node type a count of this accelerator most naturally lives in (smallest that holds it, else largest)."""
    nodes = nodes_for(acc_key)
    if not nodes:
        return None
    fitting = [n for n in nodes if n.accelerators_per_node >= gpus]
    if fitting:
        return min(fitting, key=lambda n: (n.accelerators_per_node, n.key))
    return nodes[0]
