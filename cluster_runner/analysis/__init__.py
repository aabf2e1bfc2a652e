"""Analysis: from results records to scaling figures, words and plots.

- :mod:`.aggregate`: read records, group them into points (:mod:`.identity`: one experiment);
- :mod:`.baseline`, :mod:`.series`: the speedup's reference; speedups, fitted laws, verdicts;
- :mod:`.intervals`, :mod:`.models`, :mod:`.hygiene`, :mod:`.metrics`: pure functions of the
  times (exact intervals, scaling laws chosen by AICc, measurement checks, speedup and friends);
- :mod:`.words`, :mod:`.report`: conclusions in words; tables in every output format;
- :mod:`.transfer`: what moved between driver and workers (driver inputs), per point;
- :mod:`.plots`: the scaling plot (matplotlib, imported only for a plot).
"""
