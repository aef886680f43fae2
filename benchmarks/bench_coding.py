"""Symbols per second through bbcodec's coding layer next to raw constriction calls.

For each leaf, the same symbols and the same (already computed) parameters are pushed and
popped through the layer and with direct ``AnsCoder.encode_reverse`` / ``decode`` calls in
the same run: 10**6 symbols per leaf in one vectorised call by default (``--block`` splits
them into several calls). Each block runs several rounds of raw push, layer push, raw pop,
layer pop back to back and the table sums the per-block best times, so that load from
other processes hits raw and layer alike and is filtered out.

For the discretised logistic mixture the layer computes the 256-way tables itself: "coder
only" compares raw constriction and the Categorical leaf on the same precomputed tables,
"incl. table" compares the leaf against table computation plus one raw call. The last rows
code 10**5 symbols in calls of 1,000 (like one autoregressive step of a batch of 1,000
images), where Python's per-call cost shows.

Run with one thread busy:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_coding.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import NamedTuple

import constriction
import numpy as np

from bbcodec.coding import (
    Bernoulli,
    Categorical,
    DiscretizedLogisticMixture,
    LatentGrid,
    Message,
    QuantizedGaussian,
    Seed,
    logistic_mixture_table,
)
from bbcodec.coding.logistic import TABLE_CHUNK_ROWS

MODEL = constriction.stream.model
SEED = Seed(value=0, n_words=2)
SMALL_CALLS_TOTAL = 100_000  # symbols coded in calls of 1,000 (last two rows)
Call = Callable[[], object]


class Block(NamedTuple):
    """Timed closures for one block of symbols."""

    raw_push: Call
    layer_push: Call
    raw_pop: Call
    layer_pop: Call


class Timing(NamedTuple):
    """Seconds to push and to pop all blocks of one row."""

    push_seconds: float
    pop_seconds: float


class Row(NamedTuple):
    """One line of the table."""

    name: str
    n_symbols: int
    raw: Timing
    layer: Timing


def timed(run: Call) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, make_block: Callable[[int], Block], n_blocks: int, n_symbols: int,
            rounds: int) -> Row:  # fmt: skip
    """Sum over blocks of the best-of-``rounds`` time of each closure."""
    totals = np.zeros(4)
    for index in range(n_blocks):
        block = make_block(index)
        best = np.full(4, np.inf)
        for _ in range(rounds):
            best = np.minimum(best, [timed(run) for run in block])
        totals += best
    raw_push, layer_push, raw_pop, layer_pop = totals
    return Row(name, n_symbols, Timing(raw_push, raw_pop), Timing(layer_push, layer_pop))


def raw_calls(
    calls: list[tuple[np.ndarray, tuple[np.ndarray, ...]]],
    model: object,
    prepare: Call | None = None,
) -> tuple[Call, Call]:
    """Push and pop closures for raw constriction: one call per (symbols, params) pair.

    ``prepare`` (if given) runs first inside each timed closure (e.g. table computation).
    """
    seeded = constriction.stream.stack.AnsCoder(SEED.words())
    pushed = []

    def push() -> None:
        if prepare is not None:
            prepare()
        coder = seeded.clone()
        for symbols, params in reversed(calls):
            coder.encode_reverse(symbols, model, *params)
        pushed[:] = [coder]

    def pop() -> None:
        if prepare is not None:
            prepare()
        coder = pushed[0].clone()
        for symbols, params in calls:
            assert np.array_equal(coder.decode(model, *params), symbols)

    return push, pop


def layer_calls(calls: list[tuple[Callable[[], object], np.ndarray]]) -> tuple[Call, Call]:
    """Push and pop closures for bbcodec: one (build leaf, symbols) pair per call.

    Building the leaf from its parameters is timed, as it is part of using the layer.
    """
    seeded = Message.seeded(SEED.value, SEED.n_words)
    pushed = []

    def push() -> None:
        message = seeded.copy()
        for build, symbols in reversed(calls):
            build().push(message, symbols)
        pushed[:] = [message]

    def pop() -> None:
        message = pushed[0].copy()
        for build, symbols in calls:
            assert np.array_equal(build().pop(message), symbols)

    return push, pop


def sample_rows(rng: np.random.Generator, table: np.ndarray) -> np.ndarray:
    """One int32 symbol per row of ``table``, drawn from that row."""
    uniforms = rng.random((table.shape[0], 1)) * table.sum(axis=1, keepdims=True)
    symbols = (np.cumsum(table, axis=1) < uniforms).sum(axis=1)
    return np.minimum(symbols, table.shape[1] - 1).astype(np.int32)


def bernoulli_block(rng: np.random.Generator, n: int, per_call: int) -> Block:
    """Bernoulli symbols with random probabilities, ``per_call`` symbols per call."""
    p_one = rng.random(n)
    bits = (rng.random(n) < p_one).astype(np.int32)
    pieces = [slice(i, i + per_call) for i in range(0, n, per_call)]
    raw = raw_calls([(bits[s], (p_one[s],)) for s in pieces], MODEL.Bernoulli(perfect=False))
    layer = layer_calls([(lambda s=s: Bernoulli(p_one[s]), bits[s]) for s in pieces])
    return Block(raw[0], layer[0], raw[1], layer[1])


def categorical_block(rng: np.random.Generator, n: int, per_call: int) -> Block:
    """256-way categorical symbols with peaked random tables."""
    table = rng.random((n, 256)) ** 8
    symbols = sample_rows(rng, table)
    pieces = [slice(i, i + per_call) for i in range(0, n, per_call)]
    raw = raw_calls([(symbols[s], (table[s],)) for s in pieces], MODEL.Categorical(perfect=False))
    layer = layer_calls([(lambda s=s: Categorical(table[s]), symbols[s]) for s in pieces])
    return Block(raw[0], layer[0], raw[1], layer[1])


def gaussian_block(rng: np.random.Generator, n: int) -> Block:
    """Latents on a grid of step 0.01 over [-10, 10]; raw gets mean/Δ and std/Δ ready."""
    grid = LatentGrid(step=0.01, n_half=1000)
    means, stds = rng.normal(size=n), rng.uniform(0.05, 1.0, size=n)
    latents = grid.to_symbols(np.clip(rng.normal(means, stds), -grid.bound, grid.bound))
    raw_model = MODEL.QuantizedGaussian(-grid.n_half, grid.n_half)
    raw = raw_calls([(latents, (means / grid.step, stds / grid.step))], raw_model)
    layer = layer_calls([(lambda: QuantizedGaussian(means, stds, grid), latents)])
    return Block(raw[0], layer[0], raw[1], layer[1])


def mixture_block(rng: np.random.Generator, n: int, m: int, include_table: bool) -> Block:
    """Discretised logistic mixtures of ``m`` components, one row per 8-bit symbol."""
    params = (rng.normal(size=(n, m)), rng.uniform(-0.9, 0.9, (n, m)), rng.uniform(-4, -2, (n, m)))
    table = np.empty((n, 256))

    def fill_table() -> None:  # the same chunked computation the leaf does
        for first in range(0, n, TABLE_CHUNK_ROWS):
            chunk = slice(first, first + TABLE_CHUNK_ROWS)
            table[chunk] = logistic_mixture_table(*(p[chunk] for p in params))

    fill_table()
    pixels = sample_rows(rng, table)
    prepare = fill_table if include_table else None
    raw = raw_calls([(pixels, (table,))], MODEL.Categorical(perfect=False), prepare)
    if include_table:
        layer = layer_calls([(lambda: DiscretizedLogisticMixture(*params), pixels)])
    else:
        layer = layer_calls([(lambda: Categorical(table), pixels)])
    return Block(raw[0], layer[0], raw[1], layer[1])


def rate(n: int, seconds: float) -> str:
    """Millions of symbols per second, formatted."""
    return f"{n / seconds / 1e6:.2f}"


def overhead(layer: float, raw: float) -> str:
    """Extra time of the layer over raw constriction, percent."""
    return f"{100 * (layer / raw - 1):+.1f} %"


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark and prints a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="symbols per leaf")
    parser.add_argument("--block", type=int, default=1_000_000, help="symbols per call")
    parser.add_argument("--rounds", type=int, default=10, help="best of this many per block")
    parser.add_argument(
        "--table-rounds", type=int, default=3, help="rounds for the logistic mixture incl. table"
    )
    parser.add_argument("--mixture", type=int, default=5, help="logistic mixture components")
    args = parser.parse_args(argv)
    n, block, rounds, m = args.n, args.block, args.rounds, args.mixture
    n_blocks = n // block
    rng = np.random.default_rng(0)
    table_rounds = args.table_rounds

    rows = [
        measure("Bernoulli", lambda _: bernoulli_block(rng, block, block), n_blocks, n, rounds),
        measure(
            "Categorical, 256-way",
            lambda _: categorical_block(rng, block, block),
            n_blocks,
            n,
            rounds,
        ),
        measure("QuantizedGaussian", lambda _: gaussian_block(rng, block), n_blocks, n, rounds),
        measure(
            f"logistic mixture (m={m}), coder only",
            lambda _: mixture_block(rng, block, m, include_table=False),
            n_blocks,
            n,
            rounds,
        ),
        measure(
            f"logistic mixture (m={m}), incl. table",
            lambda _: mixture_block(rng, block, m, include_table=True),
            n_blocks,
            n,
            table_rounds,
        ),
        measure(
            "Bernoulli, calls of 1,000",
            lambda _: bernoulli_block(rng, SMALL_CALLS_TOTAL, 1000),
            1,
            SMALL_CALLS_TOTAL,
            rounds,
        ),
        measure(
            "Categorical 256-way, calls of 1,000",
            lambda _: categorical_block(rng, SMALL_CALLS_TOTAL, 1000),
            1,
            SMALL_CALLS_TOTAL,
            rounds,
        ),
    ]

    print(
        f"Millions of symbols per second; {n:,} symbols per leaf in vectorised calls of "
        f"{block:,} (last two rows: {SMALL_CALLS_TOTAL:,} symbols in calls of 1,000); per "
        "block the best of "
        f"{rounds} rounds ({table_rounds} for the logistic mixture incl. table)."
    )
    print()
    print("| leaf | raw push | layer push | push overhead | raw pop | layer pop | pop overhead |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        raw, layer = row.raw, row.layer
        print(
            f"| {row.name} | {rate(row.n_symbols, raw.push_seconds)} | "
            f"{rate(row.n_symbols, layer.push_seconds)} | "
            f"{overhead(layer.push_seconds, raw.push_seconds)} | "
            f"{rate(row.n_symbols, raw.pop_seconds)} | {rate(row.n_symbols, layer.pop_seconds)} | "
            f"{overhead(layer.pop_seconds, raw.pop_seconds)} |"
        )


if __name__ == "__main__":
    main()
