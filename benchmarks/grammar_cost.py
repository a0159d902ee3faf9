"""What grammar-constrained decoding costs per search step, apart from the decoder.

    python -m benchmarks.grammar_cost [--model DIR] [--beam 10] [--repeats 200] [LATEX ...]

Replays each expression (default: a few long CROHME-style ones) through the search's masking
(``search.masked_logprobs``) and the grammar's state updates for ``beam`` hypotheses, as beam search
does at every step, and prints microseconds per step. Compare with a decoder step
(``benchmarks.profile_step``).
"""

import time

import click
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.decoding.search import masked_logprobs
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.recognizer import BUNDLED_MODEL
from hmer_runtime.text.grammar import LatexGrammar
from hmer_runtime.text.latex import tokenize

LONG = (
    r"\frac{a^{2}+b_{i}}{\sqrt{x+y}}+\sum_{i=1}^{n}x_{i}^{2}-\frac{1}{2}",
    r"\int_{0}^{1}\frac{\sqrt[3]{x^{2}+1}}{\sin(x)}dx=\lim_{n\rightarrow\infty}\frac{1}{n}\sum_{k=1}^{n}f(\frac{k}{n})",
    r"y=\frac{-b\pm\sqrt{b^{2}-4ac}}{2a}",
)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("latex", nargs=-1)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Default: the bundled model.")
@click.option("--beam", default=10, show_default=True)
@click.option("--repeats", default=200, show_default=True)
@click.option("--max-len", default=200, show_default=True)
def main(latex, model_dir, beam, repeats, max_len) -> None:
    vocab = ModelSpec.load(model_dir or BUNDLED_MODEL).vocab
    grammar = LatexGrammar(vocab)
    logp = np.random.default_rng(0).standard_normal((beam, len(vocab.tokens))).astype(np.float32)
    for expr in latex or LONG:
        ids = vocab.encode(tokenize(expr))
        start = time.perf_counter()
        for _ in range(repeats):
            states = [grammar.start()] * beam
            for k, i in enumerate(ids):
                masked_logprobs(logp, grammar, states, max_len - k)
                states = [grammar.advance(s, i) for s in states]
        us = (time.perf_counter() - start) / (repeats * len(ids)) * 1e6
        click.echo(f"{len(ids):3d} tokens, beam {beam}: {us:6.1f} us per step  {expr}")


if __name__ == "__main__":
    main()
