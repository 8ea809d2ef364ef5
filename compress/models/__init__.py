"""Model factories: every module here registers its model when imported."""

from compress.models import performance_rnn  # noqa: F401  (registers performance_rnn)
from compress.models import word_lm  # noqa: F401  (registers word_lm)
