"""TLS contexts for SIP over TLS (RFC 3261 §26.2, RFC 5922).

Rules of this module:

- The server side presents the configured certificate (with any chain
  certificates that follow it in the same file).  With a CA file it also
  asks clients for theirs, optionally (phones have none), and a presented
  one must verify against that CA or the handshake fails; the names of a
  verified client certificate (``peer_names``) can prove a focus
  (focus/trust.py).
- The client side always verifies the server with ``service_identity``
  (``optionsForClientTLS``): against the given CA file when configured,
  else the platform's trust store.  The name checked is the host of the
  URI that was resolved (RFC 5922 §4), or the IP literal when there is
  none.  It presents our own certificate when we have one (mutual TLS
  between foci).
"""

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto
from twisted.internet import ssl

__all__ = ["TLSSettings", "peer_names"]


def peer_names(certificate):
    """The names a verified peer certificate (pyOpenSSL X509) gives: its
    subjectAltName DNS names and IP addresses (RFC 5922 §7.1: the
    identities of a SIP certificate), or its CN when it has none."""
    cert = certificate.to_cryptography()
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(a.value for a in cert.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME))
    return frozenset(sans.get_values_for_type(x509.DNSName)) | frozenset(
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress))


def _load_chain(path):
    """Every certificate of a PEM file, as ``cryptography`` objects."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


class TLSSettings:
    """Certificate, key and trust for both sides of TLS connections.

    ``certificate`` and ``key``: PEM files (the certificate file may carry
    the chain after the leaf).  ``ca``: a PEM file of trusted CA
    certificates for verifying servers (None: the platform's trust store).
    """

    def __init__(self, certificate=None, key=None, ca=None):
        self.certificate = certificate
        self.key = key
        self.ca = ca
        self._server = None
        self._own = {}
        self._trust = None
        if certificate:
            chain = _load_chain(certificate)
            if not chain:
                raise ValueError(f"no certificate in {certificate}")
            with open(key or certificate, "rb") as f:
                pkey = serialization.load_pem_private_key(f.read(), password=None)
            # pyOpenSSL takes ``cryptography`` objects (its own are deprecated).
            self._own = {"privateKey": pkey, "certificate": chain[0],
                         "extraCertChain": chain[1:]}
        client_certs = {}
        if ca:
            cas = [crypto.X509.from_cryptography(c) for c in _load_chain(ca)]
            if not cas:
                raise ValueError(f"no certificate in {ca}")
            self._trust = ssl.trustRootFromCertificates([ssl.Certificate(c) for c in cas])
            # Ask, not require (a trustRoot would require): phones have none.
            client_certs = {"verify": True, "caCerts": cas, "requireCertificate": False}
        if certificate:
            self._server = ssl.CertificateOptions(**self._own, **client_certs)

    @classmethod
    def coerce(cls, value):
        """None, a ``TLSSettings``, or a mapping with ``certificate``,
        ``key`` and ``ca`` (what ``stack._tls_settings`` builds)."""
        if value is None or isinstance(value, cls):
            return value
        return cls(value.get("certificate"), value.get("key"), value.get("ca"))

    @property
    def can_serve(self):
        return self._server is not None

    def server_options(self):
        if self._server is None:
            raise ValueError("a TLS listener needs a certificate and a key")
        return self._server

    def client_options(self, hostname):
        """Client context verifying ``hostname`` (a DNS name or an IP)."""
        return ssl.optionsForClientTLS(
            hostname, trustRoot=self._trust, extraCertificateOptions=self._own)
