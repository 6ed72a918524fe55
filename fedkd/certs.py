"""``fedkd-certs OUT_DIR --nodes N``: test TLS material and SuperNode keys for a local cluster.

Writes, with the ``cryptography`` package (no openssl binary needed):

* ``ca.crt`` / ``ca.key``: a throw-away certificate authority;
* ``server.pem`` / ``server.key``: the SuperLink certificate, signed by the CA, valid for
  ``127.0.0.1`` and ``localhost`` (add ``--host NAME`` for other addresses);
* ``supernode_<i>`` / ``supernode_<i>.pub``: one EC P-384 key pair per SuperNode in OpenSSH
  format (what ``flower-supernode --auth-supernode-private-key`` and
  ``flwr supernode register`` take).

For testing only: production deployments use certificates from a real CA.
"""

import argparse
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

VALID_DAYS = 30


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_tls(out_dir: Path, hosts: list[str]) -> None:
    """CA + SuperLink certificate for ``hosts`` (IP addresses or DNS names)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedkd test CA"))
        .issuer_name(_name("fedkd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (out_dir / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (out_dir / "server.pem").write_bytes(server_cert.public_bytes(pem))
    for path, key in ((out_dir / "ca.key", ca_key), (out_dir / "server.key", server_key)):
        _write_private(
            path,
            key.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ),
        )


def generate_node_key(out_dir: Path, name: str) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format: (private key path, public key path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = out_dir / name
    public = out_dir / f"{name}.pub"
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--nodes", type=int, default=3, help="number of SuperNode key pairs")
    parser.add_argument(
        "--host", action="append", default=None, help="SuperLink address (repeatable)"
    )
    args = parser.parse_args()
    generate_tls(args.out_dir, args.host or ["127.0.0.1", "localhost"])
    for i in range(args.nodes):
        generate_node_key(args.out_dir, f"supernode_{i}")
    print(f"wrote CA, SuperLink certificate and {args.nodes} SuperNode keys to {args.out_dir}")


if __name__ == "__main__":
    main()
