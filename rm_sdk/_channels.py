"""Shared gRPC channels, one per address, for the SDK's clients and participants."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from rm_sdk._addresses import is_ip
from rm_sdk._gen.paxoscommit.v1 import paxoscommit_pb2_grpc as pb_grpc
from rm_sdk._streams import StreamCoordinator, open_channel

#: Status codes that mean "this server did not answer", not "the request was wrong".
TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class Channels:
    """``credentials``: mTLS to every service (:func:`rm_sdk.tls.credentials`); None:
    plain text (a cluster run with --insecure)."""

    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.credentials = credentials
        #: The name coordinator certificates carry when a replica is dialled by its IP.
        self.coordinator_name: str | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._coordinators: dict[str, StreamCoordinator] = {}
        # Stubs are cached too: building one registers every method (a profile showed
        # ~2% of an RM process's CPU in CoordinatorStub.__init__).
        self._acceptors: dict[str, pb_grpc.AcceptorAsyncStub] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = open_channel(address, self.credentials)
        return ch

    def use_coordinator_name(self, coordinators: Sequence[str]) -> None:
        """Replicas are dialled at the IP they advertise (the owner of a transaction), while
        their shared certificate names the Service the client was configured with (e.g.
        Kubernetes pod IPs behind one Service): verify those against the configured host."""
        for address in coordinators:
            host = address.rsplit(":", 1)[0].strip("[]")
            if host and not is_ip(host):
                self.coordinator_name = host
                return

    def coordinator(self, address: str) -> StreamCoordinator:
        """Calls to the coordinator at ``address``, batched on one stream per address."""
        link = self._coordinators.get(address)
        if link is None:
            host = address.rsplit(":", 1)[0].strip("[]")
            ch = self._channels.get(address)
            if ch is None and self.credentials is not None and self.coordinator_name and is_ip(host):
                ch = self._channels[address] = open_channel(address, self.credentials, self.coordinator_name)
            link = self._coordinators[address] = StreamCoordinator(ch or self.channel(address))
        return link

    def acceptor(self, address: str) -> pb_grpc.AcceptorAsyncStub:
        stub = self._acceptors.get(address)
        if stub is None:
            stub = self._acceptors[address] = pb_grpc.AcceptorStub(self.channel(address))
        return stub

    async def close(self) -> None:
        links, self._coordinators = list(self._coordinators.values()), {}
        for link in links:
            await link.close()
        channels, self._channels = list(self._channels.values()), {}
        self._acceptors.clear()
        for ch in channels:
            await ch.close(None)
