"""Model factories: every module here registers its model when imported."""

from compress.models import performance_rnn, word_lm  # noqa: F401  (register performance_rnn, word_lm)
