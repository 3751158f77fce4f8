"""mTLS credentials for the SDK: pass them as ``credentials=`` to :class:`rm_sdk.Client`,
:class:`rm_sdk.Participant`, the ready-made resource managers and their sync twins.

A cluster with TLS (the default of ``paxos-commit up``, the demo and the Helm chart)
accepts only peers with a certificate from its CA naming a role,
``spiffe://paxos-commit/<role>/<name>``: an application presents ``app/<name>``, a
resource manager ``rm/<its rm id>`` (it may vote, join and wait only as that RM). Make
them with ``paxos-commit certs DIR --issue app:shop --issue rm:bank-a``.
"""

from __future__ import annotations

from pathlib import Path

import grpc

__all__ = ["credentials", "credentials_from_dir"]


def credentials(cert: Path | str, key: Path | str, ca: Path | str) -> grpc.ChannelCredentials:
    """Client credentials from PEM files: this process's certificate chain and key, and
    the CA that signed the servers' certificates. Read once: a process picks up a
    rotated certificate when it opens new channels (a new Client or Participant)."""
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )


def credentials_from_dir(certs_dir: Path | str, role: str, name: str) -> grpc.ChannelCredentials:
    """Credentials from a ``paxos-commit certs`` folder: ``<role>-<name>.pem``, its key, ``ca.pem``."""
    d = Path(certs_dir)
    return credentials(d / f"{role}-{name}.pem", d / f"{role}-{name}-key.pem", d / "ca.pem")
