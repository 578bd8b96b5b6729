"""What a network can see: analytic and empirical receptive fields (SPEC.md, "Receptive field").

    >>> from segcli.config.schema import CNNSpec
    >>> from segcli.models import build, field_graph
    >>> from segcli.receptive_field import analyse
    >>> analyse(field_graph(CNNSpec(layers=3)), (32, 32)).receptive_field
    (7, 7)
    >>> from segcli.receptive_field.empirical import empirical_receptive_field
    >>> empirical_receptive_field(build(CNNSpec(layers=3)))
    (7, 7)

:mod:`~segcli.receptive_field.graph` and :mod:`~segcli.receptive_field.analytic` are torch-free;
:mod:`~segcli.receptive_field.empirical` needs torch and is imported on demand.
"""

from segcli.receptive_field.analytic import FieldReport, LayerField, analyse
from segcli.receptive_field.graph import Graph, Node, SizeError

__all__ = ["FieldReport", "Graph", "LayerField", "Node", "SizeError", "analyse"]
