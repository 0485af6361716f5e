"""
Ways in: the ``mtls:`` and ``proxy:`` endpoints, the seed's wire format
(``--legacy-listen``), TLS half-close, and listening at start-up.
"""
