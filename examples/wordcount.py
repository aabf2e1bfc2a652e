"""Word count by map, shuffle and reduce: a graph beyond fan-out and reduce, with the full API.

The graph (``documents`` = M, ``partitions`` = P)::

    map-00000 ... map-M         each counts the words of one document, split by partition
        \\  \\   /  /              (every reduce depends on every map: the shuffle)
    reduce-000 ... reduce-P     each merges its partition's counts from all M maps
          \\    |    /
            merge               the whole count, one dict, sorted by word

Documents are made up, reproducibly: document i draws ``words`` words from a fixed vocabulary
with its own seeded generator (a word's frequency follows Zipf's law, as in real text). A word
goes to partition ``crc32(word) % P``, stable across processes (Python's own ``hash`` of a
string is not).

Verified by its own check: the driver recounts every document with a ``Counter``, without the
graph.

    runner submit --job examples/wordcount.toml --backend dask --workers 2
"""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

from cluster_runner import Graph, Param, Ref, ResultSummary, Verification, Workload, summarize_value

#: The vocabulary: 2,000 made-up words.
VOCABULARY = [f"w{n:04d}" for n in range(2_000)]
#: Zipf weights: the n-th word is 1/n as frequent as the first.
WEIGHTS = [1 / (n + 1) for n in range(len(VOCABULARY))]


def document(seed: int, index: int, words: int) -> list[str]:
    """The words of document ``index``."""
    rng = random.Random(seed * 1_000_003 + index)
    return rng.choices(VOCABULARY, weights=WEIGHTS, k=words)


def partition(word: str, partitions: int) -> int:
    return zlib.crc32(word.encode()) % partitions


def map_document(seed: int, index: int, words: int, partitions: int) -> list[dict[str, int]]:
    """Map: one document's word counts, one dict per partition."""
    parts: list[dict[str, int]] = [{} for _ in range(partitions)]
    for word, count in Counter(document(seed, index, words)).items():
        parts[partition(word, partitions)][word] = count
    return parts


def reduce_partition(number: int, *mapped: list[dict[str, int]]) -> dict[str, int]:
    """Reduce: partition ``number``'s counts, merged over every map (the shuffle's far side)."""
    total: Counter[str] = Counter()
    for parts in mapped:
        total.update(parts[number])
    return dict(total)


def merge(*partitions: dict[str, int]) -> dict[str, int]:
    """The whole count, sorted by word (partitions hold disjoint words)."""
    return dict(sorted(word_count for part in partitions for word_count in part.items()))


class WordCount(Workload):
    """Word count by map, shuffle (every reduce reads every map) and reduce."""

    name = "wordcount"
    description = "word count of made-up documents by map, shuffle and reduce"
    weak_param = "documents"
    params = (
        Param("documents", int, "documents: one map task each", default=64, minimum=1),
        Param("words", int, "words per document", default=20_000, minimum=1),
        Param("partitions", int, "reduce tasks: the shuffle's width", default=8, minimum=1),
        Param("seed", int, "seed of the made-up documents", default=0, minimum=0),
    )

    def build(self, graph: Graph, stage: str, params: Mapping[str, Any]) -> Ref:
        seed, words, width = params["seed"], params["words"], params["partitions"]
        maps = [
            graph.add(f"{stage}/map-{i:05d}", map_document, seed, i, words, width, stage=stage)
            for i in range(params["documents"])
        ]
        reduces = [
            graph.add(f"{stage}/reduce-{p:03d}", reduce_partition, p, *maps, stage=stage)
            for p in range(width)
        ]
        return graph.add(f"{stage}/merge", merge, *reduces, stage=stage)

    def verify(self, params: Mapping[str, Any], value: Any) -> Verification:
        expected: Counter[str] = Counter()
        for i in range(params["documents"]):
            expected.update(document(params["seed"], i, params["words"]))
        ok = value == dict(sorted(expected.items()))
        method = (
            f"recounted in the driver without the graph: {len(expected):,} distinct words,"
            f" {sum(expected.values()):,} in all"
        )
        return Verification(ok, method)

    def summarize(self, params: Mapping[str, Any], value: Any) -> ResultSummary:
        """The default digest of the dict, and a display shorter than the default's."""
        top = max(value, key=value.__getitem__)
        display = f"{len(value):,} words, {sum(value.values()):,} in all; {top} x{value[top]:,}"
        return ResultSummary(len(value), display, summarize_value(value).digest)


WORKLOAD = WordCount()
