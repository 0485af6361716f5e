"""
Registers commandproto's ``proxy:`` server endpoint prefix with Twisted.
"""

from commandproto._proxy import ProxyServerParser

commandproto_proxy = ProxyServerParser()
