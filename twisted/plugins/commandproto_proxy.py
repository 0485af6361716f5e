"""
Registers commandproto's ``proxy:`` server endpoint prefix with Twisted.
"""

from commandproto.listeners.proxy import ProxyServerParser

commandproto_proxy = ProxyServerParser()
