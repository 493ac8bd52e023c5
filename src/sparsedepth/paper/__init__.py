"""This paper's reproduction, built on the library (which never imports it).

- ``spec``: what the paper ran and reported: the experiments at each scale, the reported numbers.
- ``pipeline``: the run cache that trains, probes and evaluates each variant once, the scheduler that runs
  several at a time, and ``reproduce``, which executes the notebooks.
- ``analysis``: the scorecard that checks the paper's claims against our results.
- ``report``: figures, tables and the small functions the notebooks call.
"""
