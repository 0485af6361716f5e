"""
Mutual TLS for the server: the ``mtls:`` server endpoint string.

Twisted's ``ssl:`` endpoint serves TLS but cannot require client
certificates.  ``mtls:`` is ``ssl:`` plus ``caCerts=PATH`` (a PEM file of one
or more CA certificates): the server then requires every client to present a
certificate signed by one of them, and refuses the handshake otherwise.

    mtls:PORT:privateKey=KEY.pem:certKey=CERT.pem:caCerts=CA.pem
        [:interface=ADDRESS][:backlog=N]

It is registered as a Twisted endpoint plugin (see
``twisted/plugins/commandproto_mtls.py``), so every tool that takes Twisted
endpoint strings, twistd included, understands it.
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import (
    IReactorTCP,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from twisted.python.filepath import FilePath
from zope.interface import implementer

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class MutualTLSServerParser:
    """
    Parses ``mtls:`` server endpoint strings.
    """

    prefix = "mtls"

    def parseStreamServer(  # type: ignore[override]
        self,
        reactor: IReactorTCP,
        port: str,
        privateKey: str | None = None,
        certKey: str | None = None,
        caCerts: str | None = None,
        interface: str = "",
        backlog: str = "50",
    ) -> IStreamServerEndpoint:
        """
        Build the endpoint (with :mod:`commandproto.listeners.halfclose`'s TLS
        connections, whose clients may half-close).

        :raises ValueError: if a file is missing or holds no certificate.
        """
        # Imported here: TLS support is an optional extra, and twistd imports
        # every endpoint plugin when it meets an unknown prefix.
        from twisted.internet.ssl import (
            Certificate,
            CertificateOptions,
            PrivateCertificate,
        )

        if privateKey is None or caCerts is None:
            raise ValueError("mtls: needs privateKey=... and caCerts=...")
        key_pem = FilePath(privateKey).getContent()
        cert_pem = FilePath(certKey or privateKey).getContent()
        ca_pem = FilePath(caCerts).getContent()
        authorities = [
            Certificate.loadPEM(block).original
            for block in _PEM_CERTIFICATE.findall(ca_pem)
        ]
        if not authorities:
            raise ValueError(f"mtls: no certificate found in {caCerts}")
        chain = _PEM_CERTIFICATE.findall(cert_pem)
        if not chain:
            raise ValueError(f"mtls: no certificate in {certKey or privateKey}")
        server = PrivateCertificate.loadPEM(chain[0] + b"\n" + key_pem)
        options = CertificateOptions(
            privateKey=server.privateKey.original,
            certificate=server.original,
            extraCertChain=[Certificate.loadPEM(c).original for c in chain[1:]],
            verify=True,
            requireCertificate=True,
            caCerts=authorities,
        )
        from ..listeners.halfclose import TLSServerEndpoint

        return TLSServerEndpoint(reactor, int(port), options, int(backlog), interface)
