"""How a pipeline's layers are split into stages (DeepSpeed's ``partition_uniform`` and
``partition_balanced``, ``deepspeed.runtime.utils``). Both return ``num_parts + 1`` boundaries: stage ``s``
holds layers ``parts[s]:parts[s + 1]``."""
from __future__ import annotations

import math
from typing import List, Sequence


def partition_uniform(num_items: int, num_parts: int) -> List[int]:
    """Equal counts, the first ``num_items % num_parts`` parts one larger; with no more items than parts,
    one item per part and the last parts empty."""
    if num_items <= num_parts:
        return [min(p, num_items) for p in range(num_parts + 1)]
    size, extra = divmod(num_items, num_parts)
    return [p * size + min(p, extra) for p in range(num_parts + 1)]


def partition_balanced(weights: Sequence[float], num_parts: int) -> List[int]:
    """Contiguous parts whose weight sums are as even as possible: of all splits into ``num_parts``
    non-empty parts, the one with the smallest spread (largest part sum minus smallest), ties going to the
    latest cut, as DeepSpeed's dynamic programme (the linear partition problem). With no more items than
    parts: :func:`partition_uniform`."""
    n, m = len(weights), num_parts
    if n <= m:
        return partition_uniform(n, m)
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = math.inf
    # best[i][j]: (spread, largest, smallest, last cut) for the first i items in j parts
    best = [[(inf, inf, inf, 0)] * (m + 1) for _ in range(n + 1)]
    best[0][0] = (0.0, 0.0, inf, 0)
    for i in range(1, n + 1):
        for j in range(1, min(i, m) + 1):
            for k in range(i):
                spread_k, largest_k, smallest_k, _ = best[k][j - 1]
                if spread_k == inf:
                    continue
                part = prefix[i] - prefix[k]
                largest, smallest = max(largest_k, part), min(smallest_k, part)
                if largest - smallest <= best[i][j][0]:
                    best[i][j] = (largest - smallest, largest, smallest, k)
    parts = [n]
    for j in range(m, 0, -1):
        parts.append(best[parts[-1]][j][3])
    return parts[::-1]
