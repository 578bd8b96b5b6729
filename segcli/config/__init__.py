"""The experiment spec: typed, validated, frozen.  See SPEC.md, "Experiment spec"."""

from segcli.config.loader import apply_overrides, dump, from_dict, load
from segcli.config.schema import Experiment

__all__ = ["Experiment", "apply_overrides", "dump", "from_dict", "load"]
