"""Analysis: from results records to scaling figures, words and plots.

- :mod:`.aggregate`: read records, check they are one experiment, group them into points;
- :mod:`.metrics`: pure functions of measured times (speedup, intervals, model fits);
- :mod:`.report`: tables and conclusions in words, in every output format;
- :mod:`.plots`: the scaling plot (matplotlib, imported only for a plot).
"""
