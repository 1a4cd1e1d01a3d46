"""Checksums of a checkpoint's files: recorded at save in ``checksums.json``, checked before anything is read.

Neither DeepSpeed nor ``torch.distributed.checkpoint`` checks what it reads back, so a flipped byte in a shard
loads as a wrong weight. Here every file of a checkpoint folder gets its size and an XXH3-64 per 64 MiB chunk
(the ``xxhash`` package: about 5x zlib's CRC-32 here, and it releases the GIL, so chunks are hashed on several
threads; ``benchmarks/bench_checkpoint_checksums.py`` measures the cost). The chunked form says which byte range
is damaged. Torch-free.
"""
from __future__ import annotations

import json
import mmap
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Sequence, Tuple

import xxhash

from .checkpoint_layout import CHECKSUMS, CheckpointError

FORMAT = "accelops-checkpoint-checksums/1"
ALGORITHM = "xxh3_64"
CHUNK_BYTES = 64 << 20
_THREADS = max(1, min(4, os.cpu_count() or 1))
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # fault the chunk in at once where Linux can
_RANK_FILE = re.compile(r"__(\d+)_")  # DCP's FileSystemWriter names rank r's files __<r>_<n>.distcp


def _chunk_hash(path: str, offset: int, length: int) -> str:
    """XXH3-64 of ``length`` bytes at ``offset`` (a multiple of CHUNK_BYTES), hex, read through a memory map
    of just that chunk (no copy out of the page cache)."""
    if length == 0:
        return xxhash.xxh3_64_hexdigest(b"")
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < offset + length:  # mapped bytes past the end would be a SIGBUS, not an error
            raise OSError(f"{path} is {size} bytes, shorter than the {offset + length} read")
        with mmap.mmap(handle.fileno(), length, offset=offset, flags=_MAP_FLAGS, prot=mmap.PROT_READ) as mapped:
            return xxhash.xxh3_64_hexdigest(mapped)


def _chunks(names: Iterable[str], sizes: Dict[str, int]) -> List[Tuple[str, int, int]]:
    jobs = []
    for name in names:
        size = sizes[name]
        jobs += [(name, start, min(CHUNK_BYTES, size - start)) for start in range(0, size, CHUNK_BYTES)]
    return jobs


def _hashes(folder: str, jobs: Sequence[Tuple[str, int, int]]) -> List[str]:
    with ThreadPoolExecutor(_THREADS) as pool:
        return list(pool.map(lambda job: _chunk_hash(os.path.join(folder, job[0]), job[1], job[2]), jobs))


def owned_files(folder: str, rank: int, world_size: int) -> List[str]:
    """The files of ``folder`` that ``rank`` checksums at save: the ones DCP wrote from this rank (still in its
    page cache); rank 0 also takes every other file. Sorted names."""
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)) and n != CHECKSUMS)

    def owner(name: str) -> int:
        match = _RANK_FILE.match(name)
        return int(match.group(1)) if match and int(match.group(1)) < world_size else 0

    return [n for n in names if owner(n) == rank]


def compute(folder: str, names: Sequence[str]) -> Dict[str, dict]:
    """``{name: {"size": bytes, "xxh3_64": [hex per chunk]}}`` for the files ``names`` of ``folder``."""
    sizes = {name: os.path.getsize(os.path.join(folder, name)) for name in names}
    jobs = _chunks(names, sizes)
    entries: Dict[str, dict] = {name: {"size": sizes[name], ALGORITHM: []} for name in names}
    for (name, _, _), digest in zip(jobs, _hashes(folder, jobs)):
        entries[name][ALGORITHM].append(digest)
    return entries


def write(folder: str, entries: Dict[str, dict]) -> None:
    """Write ``checksums.json`` into ``folder`` durably and atomically: it marks the folder complete."""
    record = {"format": FORMAT, "algorithm": ALGORITHM, "chunk_bytes": CHUNK_BYTES, "files": dict(sorted(entries.items()))}
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
        raise  # the caller tells a checkpoint saved before checksums from a damaged one
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
    digests = entry.get(ALGORITHM)
    return isinstance(digests, list) and len(digests) == -(-entry["size"] // CHUNK_BYTES)


def verify(folder: str, files: Dict[str, dict], names: Sequence[str]) -> List[Tuple[str, str]]:
    """Check the files ``names`` of ``folder`` against the recorded ``files``: one ``(path, problem)`` per bad
    file (missing, truncated or grown, a chunk whose checksum differs), empty when all are intact."""
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
    jobs = _chunks(present, {name: files[name]["size"] for name in present})
    try:
        digests = _hashes(folder, jobs)
    except OSError as error:
        return problems + [(folder, f"a file cannot be read: {error}")]
    bad: Dict[str, Tuple[str, str]] = {}
    for (name, start, length), digest in zip(jobs, digests):
        if digest != files[name][ALGORITHM][start // CHUNK_BYTES] and name not in bad:
            bad[name] = (os.path.join(folder, name), f"is damaged: bytes {start}..{start + length - 1} do not match "
                                                      f"the checksum recorded at save")
    return problems + [bad[name] for name in present if name in bad]
