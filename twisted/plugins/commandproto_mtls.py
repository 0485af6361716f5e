"""
Registers commandproto's ``mtls:`` server endpoint string with Twisted.
"""

from commandproto._tls import MutualTLSServerParser

commandproto_mtls = MutualTLSServerParser()
