"""Where a model fails: ExpRate by expression length and structure, and its commonest token edits.

    hmer-eval hmer_runtime/models/default ../shared/data/crohme/crohme-2014.tar.gz --beam 10 -o 2014.jsonl
    python -m benchmarks.error_breakdown 2014.jsonl

Reads the per-expression JSON lines of ``hmer-eval --out`` (truth and prediction as
space-separated tokens); prints markdown tables. No model is run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click
from rapidfuzz.distance import Levenshtein

from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.text.grammar import LatexGrammar
from hmer_runtime.text.metrics import LENGTH_BUCKETS, length_bucket
from hmer_runtime.text.vocab import Vocab

# An expression belongs to every group whose token it holds; "flat" holds none of them.
STRUCTURES = {"fraction": {"\\frac"}, "root": {"\\sqrt"}, "superscript": {"^"}, "subscript": {"_"},
              "sum / integral / limit": {"\\sum", "\\int", "\\lim"}}


def structures(tokens: list[str]) -> list[str]:
    """The structure groups an expression belongs to (``["flat"]`` when none)."""
    have = set(tokens)
    found = [name for name, marks in STRUCTURES.items() if have & marks]
    return found or ["flat"]


def token_edits(truth: list[str], pred: list[str]) -> list[str]:
    """The edits turning ``truth`` into ``pred``: ``a -> b``, ``missing a``, ``extra b``."""
    out = []
    for op in Levenshtein.editops(truth, pred):
        if op.tag == "replace":
            out.append(f"{truth[op.src_pos]} -> {pred[op.dest_pos]}")
        elif op.tag == "delete":
            out.append(f"missing {truth[op.src_pos]}")
        else:
            out.append(f"extra {pred[op.dest_pos]}")
    return out


def runs_away(truth: list[str], pred: list[str]) -> bool:
    """A reading that loops on: over twice the truth's length plus 5 tokens, or 150 tokens or more."""
    return len(pred) > 2 * len(truth) + 5 or len(pred) >= 150


def breakdown(rows: list[dict]) -> dict:
    """Per group (length buckets, then structures): [right, expressions]; the edits' counts; how
    many readings run away, and how many are not valid canonical LaTeX (``LatexGrammar``)."""
    preds = [r["prediction"].split() for r in rows]
    vocab = Vocab.build(preds)
    grammar = LatexGrammar(vocab)
    order = [f"{length_bucket(lo)} tokens" for lo, _ in LENGTH_BUCKETS] + list(STRUCTURES) + ["flat"]
    groups = {key: [0, 0] for key in order}
    edits: Counter[str] = Counter()
    runaway = invalid = 0
    for r, pred in zip(rows, preds):
        truth = r["truth"].split()
        runaway += runs_away(truth, pred)
        invalid += not grammar.accepts(vocab.encode(pred))
        for key in [f"{length_bucket(len(truth))} tokens"] + structures(truth):
            groups[key][0] += truth == pred
            groups[key][1] += 1
        edits.update(token_edits(truth, pred))
    return {"n": len(rows), "groups": {k: v for k, v in groups.items() if v[1]}, "edits": edits,
            "runaway": runaway, "invalid": invalid}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("predictions", type=click.Path(exists=True, dir_okay=False))
@click.option("--top", default=15, show_default=True, help="How many of the commonest edits to list.")
def main(predictions: str, top: int) -> None:
    rows = [json.loads(line) for line in Path(predictions).read_text(encoding="utf-8").splitlines() if line]
    b = breakdown(rows)
    click.echo(f"{b['n']} expressions, {b['runaway']} of them read on and on (runs_away), "
               f"{b['invalid']} not valid LaTeX")
    click.echo("\n| group | expressions | ExpRate |\n|---|---|---|")
    for key, (right, n) in b["groups"].items():
        click.echo(f"| {key} | {n} | {100 * right / n:.2f} |")
    click.echo("\n| token edit (truth -> prediction) | count |\n|---|---|")
    for edit, count in b["edits"].most_common(top):
        click.echo(f"| `{edit}` | {count} |")


if __name__ == "__main__":
    main()
