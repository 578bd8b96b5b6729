"""What a network can see: analytic and empirical receptive fields (SPEC.md, "Receptive field").

    >>> from segcli.config.schema import CNNSpec
    >>> from segcli.models import build, field_graph
    >>> from segcli.receptive_field import analyse
    >>> analyse(field_graph(CNNSpec(layers=3)), (32, 32)).receptive_field
    (7, 7)
    >>> from segcli.receptive_field.empirical import empirical_receptive_field
    >>> empirical_receptive_field(build(CNNSpec(layers=3)))
    (7, 7)

:mod:`~segcli.receptive_field.analytic` is torch-free; it reads the layer graph each network
gives of itself (:mod:`segcli.models.graph`, re-exported here on first use, which imports the
models and so torch).  :mod:`~segcli.receptive_field.empirical` needs torch and is imported on
demand.  Dependencies run one way: ``receptive_field`` → ``models``, never the reverse.
"""

from typing import Any

from segcli.receptive_field.analytic import FieldReport, LayerField, analyse

__all__ = ["FieldReport", "Graph", "LayerField", "Node", "SizeError", "analyse"]


def __getattr__(name: str) -> Any:
    """``Graph``, ``Node`` and ``SizeError`` live in :mod:`segcli.models.graph`."""
    if name in ("Graph", "Node", "SizeError"):
        from segcli.models import graph

        return getattr(graph, name)
    raise AttributeError(f"module 'segcli.receptive_field' has no attribute {name!r}")
