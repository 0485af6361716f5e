"""
The command server: the connection protocol and its factory, its counters
and latency histograms.
"""
