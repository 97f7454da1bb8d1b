"""Hypothesis profiles: a quick, derandomized one for `make test`; `make fuzz` runs long.

Select with HYPOTHESIS_PROFILE (default: "default"). The default profile replays the same
examples on every run, so CI failures reproduce; "long" explores freshly each time and
prints a reproduction blob for any failure.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=100, stateful_step_count=40, deadline=None,
                          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, stateful_step_count=100, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
