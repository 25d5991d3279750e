"""The run context: the `--seed` option resolved once, and every named random stream of a run derived from it.

Each stream is a SeedSequence of the root seed with a spawn key of its own, so adding a stream never
moves the numbers of another. The table below is the one place that names them; libraries take the
SeedSequence they are handed and derive only its children (replications, batches).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.errors import InputError

# stream name -> spawn key under SeedSequence(seed); the values are today's, so outputs stay the same
STREAMS: dict[str, tuple[int, ...]] = {
    "replications": (),  # replication r is child r: SeedSequence(seed).spawn(R)[r]
    "batches": (0,),  # compare with R = 1: batch b is child b of replication 0
    "draws": (0x6472617773, 0),  # "draws": parameter draws, a two-part key no spawn child meets
    "hotspots": (0x6472617773, 0),  # the same draws as simulate's, so a model's intervals agree across verbs
    "events": (2**31 + 5,),  # the simulated event log (--events-out)
    "forecast": (0x666F7265, 0),  # "fore": journey forecast's arrival paths and outcome noise
    "backtest": (0x6261636B, 0),  # "back": the backtest's weekly intervals: arrival paths and outcome noise
}


def resolve_seed(seed: int | None) -> int:
    """A missing seed becomes a fresh one that is recorded, so every run can be repeated."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if seed < 0:
        raise InputError("must not be negative", where="--seed", value=seed)
    return int(seed)


@dataclass(frozen=True)
class RunContext:
    """A run's root seed and its named random streams (each call returns a fresh SeedSequence)."""

    seed: int

    @classmethod
    def from_option(cls, seed: int | None) -> RunContext:
        """The context of a `--seed` value (None: fresh entropy, recorded in the outputs)."""
        return cls(resolve_seed(seed))

    @property
    def root(self) -> np.random.SeedSequence:
        """The root SeedSequence of the run."""
        return np.random.SeedSequence(self.seed)

    def stream(self, name: str) -> np.random.SeedSequence:
        """The named stream (see STREAMS), fresh: spawning from it never changes a later call's."""
        return np.random.SeedSequence(self.seed, spawn_key=STREAMS[name])

    def replications(self, n: int) -> list[np.random.SeedSequence]:
        """The streams of ``n`` replications."""
        return self.stream("replications").spawn(n)

    def batches(self, n: int) -> list[np.random.SeedSequence]:
        """The streams of ``n`` paired batches of a one-replication compare."""
        return self.stream("batches").spawn(n)

    def sampler_seed(self, offset: int = 0, worker: int = 0) -> int:
        """The optimizer's TPE seed from (seed, trials already in the study, worker)."""
        return int(np.random.SeedSequence([self.seed, offset, worker]).generate_state(1)[0])
