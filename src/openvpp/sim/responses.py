"""Simulated telemetry of resources that answer test or dispatch instructions.

Each resource's normal power follows its archetype profile (``kernels.profiles``), linearly
interpolated from 15-minute slots to the asked step. An instruction asks for a change of
``kw`` over a window; the simulated resource delivers ``delivery × kw`` after a first-order
ramp with its own time constant. Behaviours are set per resource, so a test can make one
resource under-deliver or fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, select

from openvpp.core.timeslots import SLOT_MINUTES, local_midnight_utc
from openvpp.kernels.profiles import materialise
from openvpp.store.schema import profile_archetypes, resources


@dataclass
class Behaviour:
    delivery: float = 1.0      # share of the instructed change actually delivered
    tau_s: float = 30.0        # first-order ramp time constant


@dataclass
class Instruction:
    resource_id: str
    start: datetime
    end: datetime
    kw: float                  # change of consumption: negative = reduce (down), positive = raise (up)


@dataclass
class SimulatedFleet:
    archetypes: np.ndarray
    archetype_index: dict[str, int]
    attrs: dict[str, dict]
    year: int
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    instructions: list[Instruction] = field(default_factory=list)

    @classmethod
    def from_db(cls, conn: Connection) -> SimulatedFleet:
        rows = conn.execute(select(profile_archetypes.c.archetype_id, profile_archetypes.c.values_f32,
                                   profile_archetypes.c.year).order_by(profile_archetypes.c.archetype_id)).all()
        mat = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows])
        attrs = {r["resource_id"]: dict(r) for r in conn.execute(select(
            resources.c.resource_id, resources.c.profile_archetype, resources.c.profile_scale_kw,
            resources.c.noise_seed, resources.c.capacity_kw)).mappings()}
        return cls(mat, {r[0]: i for i, r in enumerate(rows)}, attrs, int(rows[0][2]))

    def instruct(self, resource_id: str, start: datetime, end: datetime, kw: float) -> None:
        self.instructions.append(Instruction(resource_id, start, end, kw))

    def __call__(self, ids: list[str], start: datetime, end: datetime, step_s: int) -> np.ndarray:
        """Telemetry (n, T) kW for [start, end) every ``step_s`` seconds (a ``TelemetrySource``)."""
        t0 = local_midnight_utc(datetime(self.year, 1, 1).date())
        offs = np.arange(int((start - t0).total_seconds()), int((end - t0).total_seconds()), step_s, dtype=float)
        slot_f = offs / (SLOT_MINUTES * 60.0)
        lo = int(np.floor(slot_f.min()))
        hi = min(int(np.ceil(slot_f.max())) + 2, self.archetypes.shape[1])
        a = [self.attrs[i] for i in ids]
        base = materialise(self.archetypes, np.array([self.archetype_index[x["profile_archetype"]] for x in a]),
                           np.array([x["profile_scale_kw"] for x in a]), np.array([x["noise_seed"] for x in a]),
                           lo, hi)
        grid = np.arange(lo, hi) + 0.5   # slot means sit mid-slot
        power = np.stack([np.interp(slot_f, grid, row) for row in base]).astype(float)
        for k, rid in enumerate(ids):
            b = self.behaviours.get(rid, Behaviour())
            for ins in (i for i in self.instructions if i.resource_id == rid):
                t_on = (ins.start - start).total_seconds()
                t_off = (ins.end - start).total_seconds()
                t = np.arange(power.shape[1]) * step_s
                on = (t >= t_on) & (t < t_off)
                ramp = 1.0 - np.exp(-(t - t_on) / max(b.tau_s, 1e-6))
                power[k] += np.where(on, ins.kw * b.delivery * ramp, 0.0)
        return power
