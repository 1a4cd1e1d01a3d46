"""Checksums of a checkpoint's files: recorded at save in ``checksums.json``, checked before anything is read.

Neither DeepSpeed nor ``torch.distributed.checkpoint`` checks what it reads back, so a flipped byte in a shard
loads as a wrong weight. Here every file of a checkpoint folder gets its size and a CRC-32 per 64 MiB chunk
(zlib's, which releases the GIL: chunks are hashed on several threads; ``benchmarks/bench_checkpoint_checksums.py``
measures the cost). The chunked form says which byte range is damaged. Torch-free.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Sequence, Tuple

from .checkpoint_layout import CHECKSUMS, CheckpointError

FORMAT = "accelops-checkpoint-checksums/1"
CHUNK_BYTES = 64 << 20
_THREADS = max(1, min(4, os.cpu_count() or 1))
_RANK_FILE = re.compile(r"__(\d+)_")  # DCP's FileSystemWriter names rank r's files __<r>_<n>.distcp


def _chunk_crc(path: str, offset: int, length: int) -> int:
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise OSError(f"short read: {len(data)} of {length} bytes at offset {offset}")
    return zlib.crc32(data)


def _chunks(folder: str, names: Iterable[str], sizes: Dict[str, int]) -> List[Tuple[str, int, int]]:
    jobs = []
    for name in names:
        size = sizes[name]
        jobs += [(name, start, min(CHUNK_BYTES, size - start)) for start in range(0, size, CHUNK_BYTES)]
    return jobs


def _crcs(folder: str, jobs: Sequence[Tuple[str, int, int]]) -> List[int]:
    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(lambda job: _chunk_crc(os.path.join(folder, job[0]), job[1], job[2]), jobs))


def owned_files(folder: str, rank: int, world_size: int) -> List[str]:
    """The files of ``folder`` that ``rank`` checksums at save: the ones DCP wrote from this rank (still in its
    page cache); rank 0 also takes every other file. Sorted names."""
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)) and n != CHECKSUMS)

    def owner(name: str) -> int:
        match = _RANK_FILE.match(name)
        return int(match.group(1)) if match and int(match.group(1)) < world_size else 0

    return [n for n in names if owner(n) == rank]


def compute(folder: str, names: Sequence[str]) -> Dict[str, dict]:
    """``{name: {"size": bytes, "crc32": [hex per chunk]}}`` for the files ``names`` of ``folder``."""
    sizes = {name: os.path.getsize(os.path.join(folder, name)) for name in names}
    jobs = _chunks(folder, names, sizes)
    entries: Dict[str, dict] = {name: {"size": sizes[name], "crc32": []} for name in names}
    for (name, _, _), crc in zip(jobs, _crcs(folder, jobs)):
        entries[name]["crc32"].append(f"{crc:08x}")
    return entries


def write(folder: str, entries: Dict[str, dict]) -> None:
    """Write ``checksums.json`` into ``folder`` durably and atomically: it marks the folder complete."""
    record = {"format": FORMAT, "algorithm": "crc32", "chunk_bytes": CHUNK_BYTES, "files": dict(sorted(entries.items()))}
    tmp = os.path.join(folder, CHECKSUMS + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=0)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(folder, CHECKSUMS))


def read(folder: str) -> Dict[str, dict]:
    """The recorded ``{name: entry}`` of ``folder``. CheckpointError naming ``checksums.json`` when it is
    missing (CheckpointNotFoundError), unreadable or malformed."""
    path = os.path.join(folder, CHECKSUMS)
    try:
        with open(path, "rb") as handle:
            record = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(path, f"is damaged (not the JSON the save wrote: {error})") from None
    files = record.get("files") if isinstance(record, dict) else None
    if (not isinstance(files, dict) or record.get("format") != FORMAT or record.get("chunk_bytes") != CHUNK_BYTES
            or not all(_valid_entry(e) for e in files.values())):
        raise CheckpointError(path, f"is damaged or of another version (expected format {FORMAT!r} with "
                                    f"chunk_bytes {CHUNK_BYTES})")
    return files


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or entry["size"] < 0:
        return False
    crcs = entry.get("crc32")
    return isinstance(crcs, list) and len(crcs) == -(-entry["size"] // CHUNK_BYTES)


def verify(folder: str, files: Dict[str, dict], names: Sequence[str]) -> List[Tuple[str, str]]:
    """Check the files ``names`` of ``folder`` against the recorded ``files``: one ``(path, problem)`` per bad
    file (missing, truncated or grown, a chunk whose CRC differs), empty when all are intact."""
    problems, present = [], []
    for name in names:
        path, expected = os.path.join(folder, name), files[name]["size"]
        try:
            size = os.path.getsize(path)
        except OSError:
            problems.append((path, "is missing (the checksum file lists it)"))
            continue
        if size != expected:
            what = "truncated" if size < expected else "longer than saved"
            problems.append((path, f"is {what}: {size} bytes, the save wrote {expected}"))
        else:
            present.append(name)
    jobs = _chunks(folder, present, {name: files[name]["size"] for name in present})
    try:
        crcs = _crcs(folder, jobs)
    except OSError as error:
        return problems + [(folder, f"a file cannot be read: {error}")]
    bad: Dict[str, Tuple[str, str]] = {}
    for (name, start, length), crc in zip(jobs, crcs):
        if f"{crc:08x}" != files[name]["crc32"][start // CHUNK_BYTES] and name not in bad:
            bad[name] = (os.path.join(folder, name), f"is damaged: bytes {start}..{start + length - 1} do not match "
                                                      f"the CRC-32 recorded at save")
    return problems + [bad[name] for name in present if name in bad]
