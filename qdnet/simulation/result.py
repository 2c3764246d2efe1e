"""The result of one Monte Carlo run, for every protocol: records, observed statistics, the analytic
expectation, deviations in sigma and the verdict, and its documented ``--json`` document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdnet.protocols.records import RawRecords
from qdnet.protocols.statistics import LinkStatistics
from qdnet.simulation.analysis import RunStatistics, Verdict


@dataclass
class SimulationResult:
    """Records, observed statistics, expectation, deviations and verdict of one run."""

    records: RawRecords | None
    statistics: RunStatistics
    expected: LinkStatistics
    deviation_sigma: dict[str, float]
    verdict: Verdict
    extra_files: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` document."""
        st, ex = self.statistics, self.expected
        classes = range(len(st.pulses))
        return {
            "protocol": st.protocol,
            "pulses": int(sum(st.pulses)),
            "detections": int(sum(st.detections)),
            "gain": st.gain(0),
            "qber": {"z": st.qber_z(0), "x": st.qber_x(0)},
            "per_class": [
                {
                    "intensity": st.intensities[k],
                    "pulses": st.pulses[k],
                    "detections": st.detections[k],
                    "gain": st.gain(k),
                    "qber": {"z": st.qber_z(k), "x": st.qber_x(k)},
                }
                for k in classes
            ],
            "expected": {
                "gain": ex.gain[0],
                "qber": {"z": ex.qber_z[0], "x": ex.qber_x[0]},
                "per_class": [
                    {"gain": ex.gain[k], "qber": {"z": ex.qber_z[k], "x": ex.qber_x[k]}}
                    for k in range(len(ex.gain))
                ],
            },
            "deviation_sigma": self.deviation_sigma,
            "extra": st.extra,
            "verdict": self.verdict.verdict,
            "reason": self.verdict.reason,
            "key_possible": self.verdict.key_possible,
            "asymptotic_bits_per_pulse": self.verdict.asymptotic_bits_per_pulse,
            "finite_key_bits": self.verdict.finite_key_bits,
            "estimates": self.verdict.estimates,
        }
