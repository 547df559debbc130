"""Polling: the loop thread, the schedule, the request budget, the clock offset and the latency policy.

No UI and no journal: testable with no Jupyter at all.
"""
