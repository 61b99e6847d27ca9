"""Reading extracted tokens back, e.g. to train a speech LM.

    ds = TokenDataset("tokens/")
    len(ds); ds[0].codes            # int16 [codebooks, frames]
    ds.get("spk1/utt3.flac")        # by the audio's name in the manifest
    for item in ds.items(): ...
    DataLoader(ds, batch_size=None, num_workers=4)   # a map-style torch Dataset

Items follow the manifest, sorted by their `audio` name. The manifest is read once, when the
dataset is created; shards are opened lazily with `safetensors.safe_open` (memory-mapped) and
a bounded number of handles is cached. A folder whose extraction is still running, or
crashed, can be read too: its per-rank manifests are included and torn last lines ignored.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from mimi.errors import MimiError
from mimi.tokens.store import MANIFEST, scan_outputs

__all__ = ["TokenDataset", "TokenItem"]

PathLike = Union[str, "os.PathLike[str]"]

_REQUIRED = {"audio": str, "shard": str, "key": str, "frames": int, "codebooks": int,
             "sample_rate": int, "samples": int}


@dataclass(frozen=True, eq=False)
class TokenItem:
    """The tokens of one audio file.

    Attributes:
        audio: the file's name in the manifest (path relative to INPUT, or as in the input list).
        codes: int16 ``[codebooks, frames]``, 12.5 frames per second.
        sample_rate: the original file's sample rate.
        samples: the original file's length in samples (per channel).
        frames: number of frames, ``codes.shape[1]``.
    """

    audio: str
    codes: torch.Tensor
    sample_rate: int
    samples: int
    frames: int

    @property
    def codebooks(self) -> int:
        return int(self.codes.shape[0])


def _check_record(out_dir: Path, rec: Mapping[str, Any]) -> None:
    for name, kind in _REQUIRED.items():
        value = rec.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MimiError(f"{out_dir / MANIFEST}: entry for {rec.get('audio')!r} has no valid "
                            f"{name!r} field")
    if Path(rec["shard"]).name != rec["shard"]:
        raise MimiError(f"{out_dir / MANIFEST}: entry for {rec['audio']!r} names a shard outside the folder")


class TokenDataset(Dataset):
    """The tokens in an output folder of `extract_tokens`, as a map-style torch Dataset.

    Raises (on creation):
        MimiError: `out_dir` is not a folder, holds no manifest, or the manifest is damaged.
    """

    def __init__(self, out_dir: PathLike, *, max_open_shards: int = 64) -> None:
        self.out_dir = Path(os.fspath(out_dir))
        if not self.out_dir.is_dir():
            raise MimiError(f"{self.out_dir}: no such folder")
        state = scan_outputs(self.out_dir)
        if not state.done and not (self.out_dir / MANIFEST).is_file() and not state.has_rank_files:
            raise MimiError(f"{self.out_dir}: no {MANIFEST} (not an output folder of `mimi tokens`)")
        self._records = [dict(state.done[k]) for k in sorted(state.done)]
        for rec in self._records:
            _check_record(self.out_dir, rec)
        self._index = {rec["audio"]: i for i, rec in enumerate(self._records)}
        self._max_open = max(1, int(max_open_shards))
        self._handles: OrderedDict[str, Any] = OrderedDict()

    # -- pickling (DataLoader workers started with spawn/forkserver): no open handles ------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        return state

    # -- metadata --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, audio: object) -> bool:
        return audio in self._index

    @property
    def names(self) -> list[str]:
        """The `audio` names, in item order."""
        return [rec["audio"] for rec in self._records]

    @property
    def fingerprint(self) -> str | None:
        """Weights fingerprint of the model that made the tokens (None for an empty folder)."""
        return self._records[0].get("fingerprint") if self._records else None

    @property
    def model_id(self) -> str | None:
        return self._records[0].get("model_id") if self._records else None

    @property
    def codebooks(self) -> int | None:
        return self._records[0]["codebooks"] if self._records else None

    def record(self, index: int) -> dict[str, Any]:
        """The manifest entry of item `index` (a copy)."""
        return dict(self._records[self._check_index(index)])

    # -- items -----------------------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"TokenDataset indices must be integers, got {type(index).__name__}")
        n = len(self._records)
        if not -n <= index < n:
            raise IndexError(f"TokenDataset index {index} out of range for {n} items")
        return index % n

    def _shard(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is not None:
            self._handles.move_to_end(name)
            return handle
        path = self.out_dir / name
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except FileNotFoundError:
            raise MimiError(f"{path}: shard listed in the manifest is missing") from None
        except Exception as exc:
            raise MimiError(f"{path}: cannot open shard ({' '.join(str(exc).split())})") from None
        self._handles[name] = handle
        if len(self._handles) > self._max_open:
            self._handles.popitem(last=False)
        return handle

    def __getitem__(self, index: int) -> TokenItem:
        rec = self._records[self._check_index(index)]
        handle = self._shard(rec["shard"])
        try:
            codes = handle.get_tensor(rec["key"])
        except Exception:
            raise MimiError(f"{self.out_dir / rec['shard']}: has no tensor {rec['key']!r} "
                            f"for {rec['audio']!r}") from None
        if codes.dtype != torch.int16 or tuple(codes.shape) != (rec["codebooks"], rec["frames"]):
            raise MimiError(f"{self.out_dir / rec['shard']}: tensor {rec['key']!r} is "
                            f"{codes.dtype} {tuple(codes.shape)}, the manifest says int16 "
                            f"{(rec['codebooks'], rec['frames'])}")
        return TokenItem(audio=rec["audio"], codes=codes, sample_rate=rec["sample_rate"],
                         samples=rec["samples"], frames=rec["frames"])

    def get(self, audio: str) -> TokenItem:
        """The item whose manifest `audio` name is `audio`.

        Raises:
            KeyError: no such file in the manifest.
        """
        try:
            index = self._index[audio]
        except KeyError:
            raise KeyError(f"{audio!r} is not in {self.out_dir / MANIFEST}") from None
        return self[index]

    def items(self) -> Iterator[TokenItem]:
        """Every item, in order (each shard is opened once while its items are read)."""
        for i in range(len(self._records)):
            yield self[i]

    def __iter__(self) -> Iterator[TokenItem]:
        return self.items()

    def close(self) -> None:
        """Drop the cached shard handles."""
        self._handles.clear()
