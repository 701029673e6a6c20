"""What a demo keeps between runs, in `demo.json` in the data directory: the choices it
was started with (seed, sector, customers), whether it was seeded, where the simulated
time was, and the simulator's position. A restart reads it and goes on from there."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

FILE_NAME = "demo.json"


class DemoState(msgspec.Struct, kw_only=True):
    seed: int
    sector: str  # the --sector word
    customers: int
    start_ms: int  # the first simulated moment: the simulator's slot 0 begins there
    clock_ms: int  # the simulated time to go on from (never before any time it showed)
    seeded: bool = False
    public_url: str = ""  # where its pictures were served when they were last announced
    next_slot: int = 0
    pending: list[tuple[int, int, int, int]] = msgspec.field(default_factory=list)


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def load_state(path: Path) -> DemoState | None:
    """The saved state, or None before the first run (ValueError when it is unreadable)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(raw, type=DemoState)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"{path} is not a demo's saved state: {exc}") from None


def save_state(path: Path, state: DemoState) -> None:
    """Write the state readable by its owner only, whole or not at all (a file beside it,
    then renamed over it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(msgspec.json.encode(state))
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
