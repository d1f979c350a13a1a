"""Speed and memory benchmarks: ratios against anchors measured in the same run.

Run one with ``python -m benchmarks.gradcam_speed`` or all with ``make bench``.
Goals live here, never in timed tests: a CI machine's load says nothing.
"""
