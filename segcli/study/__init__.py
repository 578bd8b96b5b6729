"""Studies: variants of an experiment compared on the same folds, with statistics.

    >>> from segcli.study import load_study, rank, compare_pairs, holm

:mod:`segcli.study.design` reads a study file and builds its variants' specs;
:mod:`segcli.study.compare` ranks them and compares every pair (Holm-corrected);
:mod:`segcli.study.page` draws ``study.html``.  ``segcli study`` (:mod:`segcli.engine.study`)
trains and scores them.
"""

from segcli.study.compare import compare_pairs, holm, rank
from segcli.study.design import load_study

__all__ = ["compare_pairs", "holm", "load_study", "rank"]
