"""All configuration in one pydantic-settings class: environment variables ``MRL_*`` (or a ``.env``).

Embedded defaults (SQLite in the data dir, a managed anvil, dev keys generated on first start) make
``mrledger serve`` work with no configuration; production sets ``MRL_DATABASE_URL`` (PostgreSQL),
``MRL_RPC_URL`` (its own node), ``MRL_CONTRACT_ADDRESS`` and key files.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.recognition import CatalogueError, load_catalogue

#: Most records in one submission request; larger uploads are split by the client.
MAX_RECORDS_PER_REQUEST = 1000
#: Largest request body accepted (a 1,000-record submission is ~1 MiB).
MAX_BODY_BYTES = 16 * 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MRL_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".mrledger"), description="Where the SQLite database, anvil state and dev keys live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/mrledger.db.")
    rpc_url: str | None = Field(None, description="JSON-RPC endpoint of the chain; unset: a managed local anvil.")
    contract_address: str | None = Field(None, description="Registry address; unset: the recorded deployment, "
                                                           "or a new one on a managed anvil.")
    confirmations: int = Field(1, ge=1, le=1000, description="Depth at which an anchor counts as confirmed.")
    batch_size: int = Field(10_000, ge=1, le=1_000_000, description="Seal a hospital's batch at this many results.")
    batch_interval: float = Field(5.0, gt=0, description="...or when its oldest result is this many seconds old.")
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on (0: any free port).")
    submitter_key_file: Path | None = Field(None, description="Private key of the anchoring account (file, 0600).")
    admin_key_file: Path | None = Field(None, description="Private key of the registry admin (file, 0600).")
    replace_after: float = Field(30.0, gt=0, description="Seconds before a stuck transaction is re-sent with a "
                                                         "higher fee.")
    api_threads: int = Field(4, ge=1, le=256, description="Threads that run request handlers. Verification is "
                             "CPU-bound under one interpreter lock, so a small pool avoids a lock convoy (benchmark: "
                             "see docs); raise it when a remote RPC endpoint keeps requests waiting on the network.")
    worker: bool = Field(True, description="Run the sealer and the anchoring worker in this process.")
    catalogue_file: Path | None = Field(None, description="Mutual-recognition catalogue (TOML, mrl-catalogue/1); "
                                                          "unset: the shipped default (docs/recognition.md).")

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
