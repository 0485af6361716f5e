"""
Operating the server: logs, metrics, signals, systemd, workers.
"""
