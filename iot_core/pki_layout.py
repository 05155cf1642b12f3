"""Where `iot-etl certs` keeps certificates and keys: paths only, no cryptography.

The listener, the simulator, the ACK publisher and the broker configuration find their files here;
the `iot_core.pki_*` modules write them. The device CA and the service CA are two independent roots: a
device certificate never verifies against the service CA (security-facts: Mosquitto has no partial chain,
so two issuing CAs under one root would be accepted on both listeners).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_ROLES = ("listener", "publisher", "simulator", "ops")
SERVICE_CN_PREFIX = "iot-etl-"
KINDS = ("device", "service", "server")


@dataclass(frozen=True)
class PkiLayout:
    """The files under one PKI directory (`IOT_PKI_DIR`)."""

    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    @property
    def services_dir(self) -> Path:
        return self.root / "services"

    @property
    def device_ca_cert(self) -> Path:
        return self.ca_dir / "device-ca.pem"

    @property
    def device_ca_key(self) -> Path:
        return self.ca_dir / "device-ca.key"

    @property
    def service_ca_cert(self) -> Path:
        return self.ca_dir / "service-ca.pem"

    @property
    def service_ca_key(self) -> Path:
        return self.ca_dir / "service-ca.key"

    @property
    def ca_chain(self) -> Path:
        """Both CA certificates: what clients trust to verify the broker (and what the broker may trust)."""
        return self.root / "ca-chain.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def crl(self) -> Path:
        """The CRLs of both CAs, concatenated (PEM); both broker listeners load it."""
        return self.root / "crl.pem"

    @property
    def index(self) -> Path:
        """Every certificate issued: serial (hex), kind, name, role, not_after, revoked_at, file."""
        return self.root / "index.json"

    @property
    def lock(self) -> Path:
        """Held (flock) while a command changes the PKI."""
        return self.root / ".lock"

    def device(self, device_id: str) -> tuple[Path, Path]:
        """The certificate and key of a device."""
        return self.devices_dir / f"{device_id}.pem", self.devices_dir / f"{device_id}.key"

    def service(self, name: str) -> tuple[Path, Path]:
        """The certificate and key of a service (the name defaults to its role)."""
        return self.services_dir / f"{name}.pem", self.services_dir / f"{name}.key"

    def server(self) -> tuple[Path, Path]:
        """The broker's certificate and key."""
        return self.server_cert, self.server_key

    def initialized(self) -> bool:
        """Whether `iot-etl certs init` has run here (both CA certificates exist)."""
        return self.device_ca_cert.is_file() and self.service_ca_cert.is_file()

    def read_index(self) -> dict[str, Any]:
        """The index as stored (`{"crl_number": int, "certs": [entry, ...]}`); empty before `init`."""
        try:
            data = json.loads(self.index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"crl_number": 0, "certs": []}
        data.setdefault("crl_number", 0)
        data.setdefault("certs", [])
        return data

    def service_names(self) -> dict[str, str]:
        """Every service name issued here -> its role (the broker's ACLs name `iot-etl-<name>`)."""
        names: dict[str, str] = {}
        for entry in self.read_index()["certs"]:
            if entry.get("kind") == "service":
                names[entry["name"]] = entry["role"]
        return names


def service_cn(name: str) -> str:
    """The CN (and so the broker username) of the service certificate `name`."""
    return f"{SERVICE_CN_PREFIX}{name}"
