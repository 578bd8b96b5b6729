"""``segcli plan``: nnU-Net-style self-configuration, explained and checked.

    >>> from segcli.plan.fingerprint import extract_fingerprint
    >>> from segcli.plan.planner import PlanOptions, make_plan
    >>> from segcli.plan.writer import render_yaml
    >>> plan = make_plan(extract_fingerprint("data/hippo"), PlanOptions(root="data/hippo"))
    >>> print(render_yaml(plan))

Modules: :mod:`~segcli.plan.fingerprint` (what the dataset is), :mod:`~segcli.plan.rules`
(nnU-Net's rules as pure functions), :mod:`~segcli.plan.budget` (fitting a schedule to a wall
clock), :mod:`~segcli.plan.checks` (the lecture's checks), :mod:`~segcli.plan.planner` (the
assembly), :mod:`~segcli.plan.decision` and :mod:`~segcli.plan.writer` (rendering).  The engine
(:mod:`segcli.engine.plan`) reads the data in worker processes and times training steps.
"""
