"""Workflows: the only modules that orchestrate stages.

* :mod:`~hyptest.workflows.study` -- ``hyptest study``: plan, collect, analyse, report.
* :mod:`~hyptest.workflows.adaptive` -- ``collection: adaptive``: collect in rounds until decided.
* :mod:`~hyptest.workflows.reanalyse` -- ``hyptest reanalyse``: import others' logs, analyse, report.
* :mod:`~hyptest.workflows.power` -- ``hyptest power``: simulate the deciding procedure.
"""
