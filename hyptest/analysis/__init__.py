"""The analysis stage: records in, comparisons and tables out.

Reads unit records (DataFrames) and writes the pieces of ``results.json``;
never collects, never orchestrates, never draws.

* :mod:`~hyptest.analysis.order` -- the order-sensitivity families (ICL vs each
  method, per slice) and :func:`~hyptest.analysis.order.run_analyses`.
* :mod:`~hyptest.analysis.cubes` -- (set, order, query) arrays from records.
* :mod:`~hyptest.analysis.descriptive` -- N sweeps, trajectories, vocabulary tables.
* :mod:`~hyptest.analysis.baseline_tests` -- Dai metrics and run summaries vs their baselines.
* :mod:`~hyptest.analysis.summary_units` -- the independent units of run summaries.
* :mod:`~hyptest.analysis.untrained_control` -- trained vs untrained-model controls.
"""
