"""Training: the plan that balances the objectives and enforces the constraints."""

from __future__ import annotations

from ._training_plan import ComparativeTrainingPlan

__all__ = ["ComparativeTrainingPlan"]
