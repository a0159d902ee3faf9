"""LaTeX as tokens: canonical tokenisation, the vocabulary, the grammar of valid prefixes, metrics."""
