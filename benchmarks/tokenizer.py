"""Piece limits of the student's tokenizer on real query strings: how many queries they cut.

Run: .venv/bin/python benchmarks/tokenizer.py
Reads the real ESCI (Amazon US) queries and the WANDS (Wayfair) queries that name a product
class, shipped in prectr/data/resources. Each set is split in two halves by a hash of the query;
the tokenizer is trained on one half (the sets have no product titles, so the queries stand on
both sides of :meth:`TextTokenizer.train`) and chooses its query limit there. Reported per set:
the limit, the share of the training half it truncates (at most 2% by construction), the share
of the other half it truncates (what a new query meets), and the share of the other half that
the former fixed limit of 12 pieces would cut. Writes results/tokenizer.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from prectr.data.simulate.vocabulary import esci_queries, wands_queries
from prectr.io import atomic_file
from prectr.text.tokenizer import TextTokenizer

ROOT = Path(__file__).resolve().parents[1]
FORMER_LIMIT = 12  # StudentConfig.query_length before limits were chosen from the log


def halves(queries: list[str]) -> tuple[list[str], list[str]]:
    """The distinct queries split in two by the parity of a hash of each."""
    distinct = sorted(set(queries))
    odd = [hashlib.sha256(q.encode()).digest()[0] % 2 == 1 for q in distinct]
    return ([q for q, o in zip(distinct, odd, strict=True) if not o],
            [q for q, o in zip(distinct, odd, strict=True) if o])  # fmt: skip


def measure(queries: list[str]) -> dict:
    train, held = halves(queries)
    tokenizer = TextTokenizer.train(train, train)
    counts = tokenizer.piece_counts(held)
    return {
        "queries": {"train": len(train), "held_out": len(held)},
        "vocab_size": tokenizer.vocab_size,
        "query_limit": tokenizer.query_length,
        "truncated_train": tokenizer.truncated["query"],
        "truncated_held_out": float(np.mean(counts > tokenizer.query_length)),
        "truncated_held_out_at_12": float(np.mean(counts > FORMER_LIMIT)),
        "pieces_held_out": {"mean": float(counts.mean()), "max": int(counts.max())},
    }


def main() -> None:
    result = {
        "esci": measure(list(esci_queries())),
        "wands": measure([q for q, _ in wands_queries()]),
    }
    path = ROOT / "results" / "tokenizer.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
