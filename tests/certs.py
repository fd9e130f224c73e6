"""Throw-away X.509 material for TLS tests (a CA and a leaf it signs)."""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_leaf(directory, hostname="localhost", ip="127.0.0.1", leaves=()):
    """Write ca.pem, cert.pem, key.pem into ``directory``; return their paths.
    ``leaves``: more leaves the CA signs, (name, hostname, ip or None), as
    NAME-cert.pem and NAME-key.pem (paths under "NAME-cert", "NAME-key")."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("mfocus test CA"))
          .issuer_name(_name("mfocus test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    def leaf_of(hostname, ip):
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(hostname)]
        if ip:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        leaf = (x509.CertificateBuilder().subject_name(_name(hostname))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return (leaf.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    files = [("ca.pem", ca.public_bytes(serialization.Encoding.PEM))]
    files += zip(("cert.pem", "key.pem"), leaf_of(hostname, ip))
    for name, host, address in leaves:
        files += zip((f"{name}-cert.pem", f"{name}-key.pem"), leaf_of(host, address))
    paths = {}
    for name, data in files:
        path = directory / name
        path.write_bytes(data)
        paths[name[:-4]] = str(path)
    return paths
