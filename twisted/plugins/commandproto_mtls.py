"""
Registers commandproto's ``mtls:`` server endpoint string with Twisted.
"""

from commandproto.listeners.tls import MutualTLSServerParser

commandproto_mtls = MutualTLSServerParser()
