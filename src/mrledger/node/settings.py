"""All configuration in one pydantic-settings class: environment variables ``MRL_*`` (or a ``.env``).

The only reader of the environment for the node and the CLI (tests/test_layers.py checks it): a setting read in
two places is soon read in none. Everything else receives what it needs as an argument.

Embedded defaults (SQLite in the data dir, a managed anvil, dev keys generated on first start) make
``mrledger serve`` work with no configuration; production sets ``MRL_DATABASE_URL`` (PostgreSQL),
``MRL_RPC_URL`` (its own node), ``MRL_CONTRACT_ADDRESS`` and key files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mrledger.service.recognition import CatalogueError, load_catalogue

#: Most records in one submission request; larger uploads are split by the client.
MAX_RECORDS_PER_REQUEST = 1000
#: Largest request body accepted (a 1,000-record submission is ~1 MiB).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: A request body must have arrived whole this many seconds after its headers (16 MiB at ~300 KB/s): a
#: client trickling bytes (slowloris) must not hold a request open for long. Answered with a 408.
BODY_TIMEOUT_SECONDS = 60.0
#: A list of files from one environment variable, split by the validator below (not parsed as JSON).
PathList = Annotated[list[Path], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MRL_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".mrledger"), description="Where the SQLite database, anvil state and dev keys live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/mrledger.db.")
    rpc_url: str | None = Field(None, description="JSON-RPC endpoint of the chain; unset: a managed local anvil.")
    contract_address: str | None = Field(None, description="Registry address; unset: the recorded deployment, "
                                                           "or a new one on a managed anvil.")
    registry_version: int = Field(2, ge=1, le=2, description="ABI of a registry serve deploys when none is "
                                  "recorded: 2 (one commitment word per batch binding the status map root, hub "
                                  "anchoring; receipts mrl-receipt/2) or 1 (root and size per batch, the registry of "
                                  "ledgers before it). A recorded or configured registry is used as it is; `mrledger "
                                  "chain upgrade` moves a ledger from v1 to v2 in place (docs/anchoring.md, "
                                  "'Registry v2').")
    confirmations: int | None = Field(None, ge=1, le=1000, description="Depth at which an anchor counts as "
                                      "confirmed and receipts carry it. Unset: 1 on local dev chains (ids 31337, "
                                      "1337), 12 elsewhere (docs/anchoring.md, 'Confirmation depth'). Deeper reorgs "
                                      "are healed either way.")
    batch_size: int = Field(10_000, ge=1, le=1_000_000, description="Seal a hospital's batch at this many results.")
    batch_interval: float = Field(5.0, gt=0, description="...or when its oldest result is this many seconds old.")
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on (0: any free port).")
    submitter_key_file: Path | None = Field(None, description="Private key of the anchoring account (file, 0600).")
    admin_key_file: Path | None = Field(None, description="Private key of the registry admin (file, 0600).")
    anchor_every: float = Field(2.0, ge=0, le=3600, description="Seconds between two anchoring transactions while "
                                "fewer than 32 batches are due (0: send what is due at once). Each transaction "
                                "costs gas and the worker's CPU whatever it carries; near the chain's block time, "
                                "a batch waits at most this much longer for its anchor.")
    replace_after: float = Field(30.0, gt=0, description="Seconds before a stuck transaction is re-sent with a "
                                                         "higher fee.")
    rpc_timeout: float = Field(5.0, gt=0, le=120, description="Seconds any call to the chain node may take. A node "
                               "that does not answer is watched off the request path: while it is silent, chain "
                               "reads fail at once with 503 and /readyz says so (docs/anchoring.md, 'Operations').")
    api_threads: int = Field(4, ge=1, le=256, description="Threads that run request handlers. Verification is "
                             "CPU-bound under one interpreter lock, so a small pool avoids a lock convoy (benchmark: "
                             "see docs); raise it when a remote RPC endpoint keeps requests waiting on the network.")
    api_processes: int = Field(1, ge=1, le=64, description="API processes on the one port (SO_REUSEPORT; "
                               "node/api_processes.py). Verification is CPU-bound under one interpreter lock, so "
                               "one process serves one core: set it to the cores the API may use (docs/scaling.md).")
    audit_processes: int = Field(0, ge=0, le=64, description="Processes a large KPI audit job spreads its event "
                                 "streams over (node/audit_pool.py), started for the job with their own database and "
                                 "chain connections, at a lower CPU priority than the API; 0: as many as "
                                 "MRL_API_PROCESSES; 1: only the job's own thread.")
    audit_split_records: int = Field(100_000, ge=0, description="Records from which an audit job uses those "
                                     "processes; a smaller one runs in its thread (starting them costs seconds).")
    worker: bool = Field(True, description="Run the sealer and the anchoring worker (in a child process of "
                                           "serve); false for an API-only node beside one that does.")
    verification_retention_days: int = Field(90, ge=0, le=36600, description="Days a verification without a "
                                             "decision is kept (the id a doctor's decision names); older ones are "
                                             "deleted hourly by the sealer process. Verifications a decision names "
                                             "are kept with it. 0 keeps them all (docs/kpis.md, 'Retention').")
    access_log_retention_days: int = Field(0, ge=0, le=36600, description="Days an access-log entry (who looked "
                                           "at or verified what) is kept; older ones are deleted hourly by the "
                                           "sealer process. 0, the default, keeps them all: the log is evidence, "
                                           "and how long it must be kept is the region's rule, not ours "
                                           "(docs/access.md, 'Retention').")
    catalogue_file: Path | None = Field(None, description="Mutual-recognition catalogue (TOML, mrl-catalogue/1); "
                                                          "unset: the shipped default (docs/recognition.md).")
    # Hospital batch signatures (docs/signatures.md §10). No MRL_TRUST_ANCHORS: the dev PKI in <data_dir>/pki.
    sign_batches: bool = Field(True, description="Sign every sealed batch with its hospital's X.509 key; a batch "
                               "whose hospital has no usable key waits unsealed (the log says why).")
    trust_anchors: PathList = Field([], description="PEM files of the CA certificates hospital "
                                    "signatures must chain to (':'-separated). Unset: a dev CA in <data_dir>/pki, "
                                    "created on first start, that issues every hospital a key automatically.")
    trust_intermediates: PathList = Field([], description="PEM files of intermediate CAs whose "
                                          "CRLs are configured (':'-separated); they must chain to an anchor.")
    trust_crls: PathList = Field([], description="CRL files, PEM or DER (':'-separated); a "
                                 "replaced file is reloaded within seconds, without a restart.")
    witness_keys: PathList = Field([], description="PEM files of the Ed25519 public keys of the region's witnesses "
                                   "(`mrledger monitor --witness-key`; ':'-separated; the file name is the witness's "
                                   "name). With MRL_WITNESS_K, POST /v1/verify requires them (docs/monitor.md).")
    witness_k: int = Field(0, ge=0, le=64, description="How many of MRL_WITNESS_KEYS must vouch for an authentic "
                           "result's batch (a checkpoint at or after it); fewer, or two that disagree: the verdict "
                           "is 'unknown'. 0: no witness requirement.")
    witness_checkpoints: Annotated[list[str], NoDecode] = Field(
        [], description="Where the witnesses publish checkpoints: URLs (one ending in '/' is a --witness-out "
                        "directory served over HTTP: <hospital>.json) or local files/directories; separated by "
                        "spaces. Fetched per hospital at most every 30 s.")
    signing_keys_dir: Path | None = Field(None, description="Hospital signing keys: <dir>/<hospital_id>/<name>"
                                          ".key.pem (0600) + <name>.crt.pem (certificate, then intermediates); the "
                                          "newest valid one signs. Default with the dev PKI: <data_dir>/pki/hospitals.")
    signing_key_passphrase: SecretStr | None = Field(None, description="Passphrase of the signing keys (and of "
                                                     "keys `mrledger pki` writes). Never logged.")
    signer_factory: str | None = Field(None, description="'module:callable' returning the hospitals' key source "
                                       "(a mrledger.service.pki.SigningKeys subclass) instead of key files: the hook "
                                       "for HSM / PKCS#11 signers (docs/signatures.md §10).")
    max_sealing_delay: float = Field(7 * 86400, gt=0, le=10 * 366 * 86400, description="Seconds a signed batch may "
                                     "claim to have been sealed before the block that anchored it, once its "
                                     "certificate is no longer valid at the block's time (signature-time; then the "
                                     "verdict is unknown, not tampered). Default 7 days: docs/signatures.md §4.")
    require_signatures: bool | None = Field(None, description="Verification fails (signature-missing) for an "
                                            "unsigned receipt, except of batches sealed before the hospital's first "
                                            "signed one. Default: true when batches are signed.")
    # Anonymous verification (POST /v1/verify without a token): a token bucket per client address.
    verify_rate_limit: float = Field(5.0, ge=0, description="Anonymous verifications per second per client "
                                     "address (IPv6: per /64), sustained; 0 switches the limit off. Tokens of "
                                     "doctors, auditors and admins are not limited. Over it: 429 with Retry-After.")
    verify_burst: int = Field(30, ge=1, le=1_000_000, description="Anonymous verifications one client address may "
                              "make at once before MRL_VERIFY_RATE_LIMIT applies (the bucket's size).")
    # Patient hashes of encounters (docs/kpis.md): every node of a region must hold the same key.
    regional_key: SecretStr | None = Field(None, description="Regional key (hex, at least 32 bytes) under which "
                                           "patient identifiers of encounters are hashed (HMAC-SHA256); never "
                                           "logged. Unset: MRL_REGIONAL_KEY_FILE.")
    regional_key_file: Path | None = Field(None, description="File holding the regional key (hex, 0600). Unset: "
                                           "<data_dir>/regional.key, generated on first start (dev only: a region's "
                                           "nodes must share one key).")
    metrics_token: SecretStr | None = Field(None, description="When set, GET /metrics needs `Authorization: Bearer "
                                            "<this token>` (the figures name hospitals with pending results); "
                                            "unset: /metrics is open. Never logged.")
    # Encryption at rest (docs/encryption.md): the master key wraps the database's data keys.
    master_key_file: Path | None = Field(None, description="File holding the master key (64 hex digits, 0600) "
                                         "that wraps the database's data keys; `mrledger keys rotate` replaces it "
                                         "in place. Unset: MRL_MASTER_KEY, else <data_dir>/master.key, generated on "
                                         "first start (keep a copy apart from the database's backups).")
    master_key: SecretStr | None = Field(None, description="The master key itself (64 hex digits), e.g. from a "
                                         "secret manager; never logged. Set this or MRL_MASTER_KEY_FILE, not both.")

    # Keys given as values rather than files (prefer the files: a key in the environment is inherited by children).
    admin_key: SecretStr | None = Field(None, description="The registry admin's private key for `mrledger chain "
                                        "deploy` when no --key-file is given. Never logged.")
    submitter_key: SecretStr | None = Field(None, description="The anchoring account's private key for `mrledger "
                                            "anchor` when no --key-file is given. Never logged.")
    fault_inject: str | None = Field(None, description="Tests only: 'crash-after-broadcast' makes the anchoring "
                                     "worker SIGKILL itself right after a transaction left for the node.")
    anvil_bin: Path | None = Field(None, validation_alias="ANVIL_BIN", description="(ANVIL_BIN, no prefix) The "
                                   "anvil binary of the managed chain, e.g. a Foundry install; unset: the one "
                                   "`npm ci` installed.")

    @field_validator("anvil_bin")
    @classmethod
    def _anvil_is_a_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ANVIL_BIN={value} is not a file")
        return value

    @field_validator("witness_checkpoints", mode="before")
    @classmethod
    def _spaced_list(cls, value: Any) -> Any:
        """URLs hold ':' (no PATH-like list): separated by white space."""
        return value.split() if isinstance(value, str) else value

    @field_validator("trust_anchors", "trust_intermediates", "trust_crls", "witness_keys", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        """A ':'-separated list, as in PATH: friendlier in an environment variable than a JSON array."""
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p.strip()]
        return value

    @field_validator("catalogue_file")
    @classmethod
    def _catalogue_loads(cls, value: Path | None) -> Path | None:
        """Load the catalogue once here so a bad file stops the node at start-up with the file's problem,
        not at the first verification."""
        if value is not None:
            try:
                load_catalogue(value)
            except CatalogueError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'mrledger.db').resolve()}"
