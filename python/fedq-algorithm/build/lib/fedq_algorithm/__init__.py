"""Write fedq algorithms in Python.

An algorithm runs in a container that its organization's node starts for one job, and talks to
the world only through the node-local endpoint (``docs/algorithm-api.md``). This package wraps
that endpoint (:class:`Node`) and reads the node's data sources.
"""

from fedq_algorithm.node import (
    DATA_DIR,
    RUN_DIR,
    Job,
    Message,
    MissingEnvironment,
    Node,
    NodeError,
    Organization,
    Subtask,
    SubtaskResult,
    SubtaskResults,
)

__all__ = [
    "DATA_DIR",
    "RUN_DIR",
    "Job",
    "Message",
    "MissingEnvironment",
    "Node",
    "NodeError",
    "Organization",
    "Subtask",
    "SubtaskResult",
    "SubtaskResults",
]
__version__ = "0.1.0"
