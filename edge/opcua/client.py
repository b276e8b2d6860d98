"""The asyncua client of one OPC UA source: built, secured, connected; reads in chunks.

Shared by the collector's sessions (:mod:`edge.opcua.collector`) and the check command
(:mod:`edge.opcua.check`). The client enters through an :class:`OpcUaClientFactory`,
so a test can hand in its own. Security is applied before connecting: user and
password, then, unless the mode is None, the client certificate (whose application
URI the client announces) and a certificate validator over the trust list, which the
server's certificate must chain to. Every failure disconnects what was half opened
before it is raised, so the caller can retry on a clean slate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError
from cryptography import x509

from edge.opcua.config import OpcUaSourceConfig, Security, SecurityMode
from zhizao.errors import ConfigError

#: items per Read or CreateMonitoredItems request: a server needs a while for thousands,
#: and one request that outlives the request timeout would cost the whole session
ITEMS_PER_REQUEST = 500


class OpcUaClientFactory(Protocol):
    """Builds the asyncua client: (endpoint URL, request timeout in s) → unconnected client.

    Not :class:`zhizao.mqtt.ClientFactory`, which builds paho clients.
    """

    def __call__(self, endpoint: str, timeout: float) -> Client: ...


def asyncua_client(endpoint: str, timeout: float) -> Client:
    # asyncua probes the server every watchdog interval and gives the probe that long;
    # at its default (1 s) a server busy with a large TranslateBrowsePaths or
    # CreateMonitoredItems request looks dead. Our heartbeat watches the data path.
    return Client(endpoint, timeout=timeout, watchdog_intervall=max(timeout, 1.0))


def _client_application_uri(certificate: x509.Certificate) -> str | None:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


async def _apply_security(client: Client, security: Security) -> None:
    if security.username is not None:
        client.set_user(security.username)
    if security.password is not None:
        client.set_password(security.password)
    if security.mode is SecurityMode.NONE:
        return
    if security.certificate is None or security.private_key is None or security.trust_list is None:
        raise ValueError("security needs certificate, private_key and trust_list")
    certificate = (
        x509.load_der_x509_certificate(await asyncio.to_thread(security.certificate.read_bytes))
        if security.certificate.suffix.lower() == ".der"
        else x509.load_pem_x509_certificate(
            await asyncio.to_thread(security.certificate.read_bytes)
        )
    )
    # The client must announce the application URI its certificate was issued for.
    uri = _client_application_uri(certificate)
    if uri is not None:
        client.application_uri = uri
    store = TrustStore([Path(security.trust_list)], [])
    try:
        await store.load()
    except (ValueError, OSError) as exc:
        # An empty or unreadable trust list would refuse every server: say so up front.
        raise ConfigError(
            str(security.trust_list), "security.trust_list", f"no usable certificate: {exc}"
        ) from exc
    client.certificate_validator = CertificateValidator(
        CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_SERVER,
        store,
    )
    policy = getattr(security_policies, f"SecurityPolicy{security.policy.value}")
    mode = getattr(ua.MessageSecurityMode, security.mode.value)
    await client.set_security(
        policy,
        str(security.certificate),
        str(security.private_key),
        security.private_key_password,
        mode=mode,
    )


async def connect(
    config: OpcUaSourceConfig, factory: OpcUaClientFactory = asyncua_client
) -> Client:
    """A connected client, or an exception naming what went wrong."""
    client = factory(config.endpoint, config.request_timeout_s)
    try:
        await _apply_security(client, config.security)
        await client.connect()
    except BaseException:
        # Release whatever half-open channel is left before the caller retries.
        with contextlib.suppress(OSError, TimeoutError, UaError, ConnectionError):
            await client.disconnect()
        raise
    return client


async def read_values(client: Client, nodes: Sequence[Node]) -> list[ua.DataValue]:
    """The Value attribute of every node, in requests of ITEMS_PER_REQUEST."""
    values: list[ua.DataValue] = []
    for start in range(0, len(nodes), ITEMS_PER_REQUEST):
        values += await client.read_attributes(
            nodes[start : start + ITEMS_PER_REQUEST], AttributeIds.Value
        )
    return values
