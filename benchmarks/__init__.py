"""Benchmarks: each figure is printed beside a baseline measured in the same run.

These machines are shared and noisy, so absolute numbers drift; the ratio to a
baseline measured seconds earlier on the same machine is the figure to compare.
Run with ``make bench``; record results in BENCHMARKS.md.
"""
