"""Streaming base: explicit, typed per-module state.

A streaming module owns one state dataclass (`ConvState`, `KVCacheState`, ...) while streaming
and `None` otherwise. `with model.streaming(batch_size):` creates (preallocates) the state of
every streaming submodule, and clears it on exit. `snapshot()` / `restore()` copy the states of
a whole tree, e.g. to branch a stream or roll it back.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

import torch
from torch import nn


@dataclass
class StreamingState:
    """Base of every per-module streaming state. Fields are tensors or plain scalars."""

    def clone(self) -> "StreamingState":
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values[f.name] = value.clone() if isinstance(value, torch.Tensor) else value
        return type(self)(**values)

    def copy_from(self, other: "StreamingState") -> None:
        """In-place copy, so preallocated buffers stay where they are."""
        for f in dataclasses.fields(self):
            value = getattr(other, f.name)
            mine = getattr(self, f.name)
            if isinstance(mine, torch.Tensor) and mine.shape == value.shape:
                mine.copy_(value)
            else:
                setattr(self, f.name, value.clone() if isinstance(value, torch.Tensor) else value)


S = TypeVar("S", bound=StreamingState)


@dataclass(frozen=True)
class StreamingSnapshot:
    """The states of every streaming module of a tree, in `modules()` order."""

    states: tuple[StreamingState, ...]


class StreamingModule(nn.Module, Generic[S], abc.ABC):
    """A module that can keep state across calls. Subclasses implement `init_state`."""

    def __init__(self) -> None:
        super().__init__()
        self._state: S | None = None
        self._batch_size = 0

    @property
    def state(self) -> S | None:
        return self._state

    @property
    def is_streaming(self) -> bool:
        return self._state is not None

    @abc.abstractmethod
    def init_state(self, batch_size: int) -> S:
        """A fresh, preallocated state for `batch_size` independent streams."""

    # -- tree-wide helpers ------------------------------------------------------------
    def _streaming_modules(self) -> list["StreamingModule"]:
        return [m for m in self.modules() if isinstance(m, StreamingModule)]

    @contextlib.contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        """Stream through this module and all its streaming submodules."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        modules = self._streaming_modules()
        if any(m.is_streaming for m in modules):
            raise RuntimeError("already streaming; nested streaming() contexts are not allowed")
        try:
            for m in modules:
                m._batch_size = batch_size
                m._state = m.init_state(batch_size)
            yield
        finally:
            for m in modules:
                m._state = None
                m._batch_size = 0

    def reset_streaming(self) -> None:
        """Start every stream afresh, keeping the batch size."""
        for m in self._streaming_modules():
            if m._state is None:
                raise RuntimeError("reset_streaming() called outside streaming()")
            m._state = m.init_state(m._batch_size)

    def snapshot(self) -> StreamingSnapshot:
        """Copy the whole tree's streaming state."""
        states = []
        for m in self._streaming_modules():
            if m._state is None:
                raise RuntimeError("snapshot() called outside streaming()")
            states.append(m._state.clone())
        return StreamingSnapshot(tuple(states))

    def restore(self, snapshot: StreamingSnapshot) -> None:
        """Put back a state taken by `snapshot()` on this same tree."""
        modules = self._streaming_modules()
        if len(modules) != len(snapshot.states):
            raise ValueError("snapshot does not belong to this module tree")
        for m, s in zip(modules, snapshot.states):
            if m._state is None:
                raise RuntimeError("restore() called outside streaming()")
            if type(s) is not type(m._state):
                raise ValueError("snapshot does not belong to this module tree")
            m._state.copy_from(s)


class StreamingContainer(StreamingModule[StreamingState]):
    """A module with no state of its own whose submodules stream (e.g. the whole model)."""

    def init_state(self, batch_size: int) -> StreamingState:
        return StreamingState()
