"""Gemini API simulator: a fake upstream with per-key scripted failures, for tests and benchmarks."""

from .app import SIMULATOR_STATE, create_app, start_simulator
from .state import PER_DAY_QUOTA_ID, PER_MINUTE_QUOTA_ID, Behaviour, RecordedRequest, SimulatorState

__all__ = [
    "PER_DAY_QUOTA_ID",
    "PER_MINUTE_QUOTA_ID",
    "SIMULATOR_STATE",
    "Behaviour",
    "RecordedRequest",
    "SimulatorState",
    "create_app",
    "start_simulator",
]
