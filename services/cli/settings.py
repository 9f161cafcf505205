"""Where keyringctl finds admin's URL, the admin token and the CA: the environment, then a config file.

Never an argument: a token on the command line lands in shell history and in
every other user's ``ps``. The config file (``KEYRINGCTL_CONFIG``, else
``~/.config/keyringctl/config.toml``, ``$XDG_CONFIG_HOME`` when set) holds a token, so it must be readable
by its owner only (mode 0600), as ssh insists for its keys::

    url = "https://admin.example.com"
    token = "..."
    ca_file = "/etc/keyring/admin-ca.crt"   # optional: the CA of admin's https certificate

The environment wins over the file, field by field: ``KEYRINGCTL_URL``,
``KEYRINGCTL_TOKEN``, ``KEYRINGCTL_CA_FILE``. The token goes to admin only:
plain http only to a loopback address (the demo stack); anything else needs
https.
"""

from __future__ import annotations

import ipaddress
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .errors import AUTH, USAGE, CliError

DEFAULT_URL: Final = "http://127.0.0.1:8081"  # the admin of scripts/start.sh
_FIELDS: Final = ("url", "token", "ca_file")


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    token: str
    ca_file: str = ""

    def __repr__(self) -> str:  # never the token, even in a debugger or a log
        return f"Settings(url={self.url!r}, ca_file={self.ca_file!r})"


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("KEYRINGCTL_CONFIG"):
        return Path(env["KEYRINGCTL_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "keyringctl" / "config.toml"


def read_config(path: Path, required: bool) -> dict[str, str]:
    """The file's fields; a missing default file is no error, an open or unsafe one is."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if required:
            raise CliError(USAGE, f"config file {path} does not exist") from None
        return {}
    except OSError as error:
        raise CliError(USAGE, f"config file {path} cannot be read ({error.strerror})") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(USAGE, f"config file {path} holds a token but others may read it "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(USAGE, f"config file {path} cannot be read ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise CliError(USAGE, f"config file {path} is not TOML: {error}") from None
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise CliError(USAGE, f"config file {path}: unknown fields {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
    wrong = sorted(name for name, value in document.items() if not isinstance(value, str))
    if wrong:
        raise CliError(USAGE, f"config file {path}: {', '.join(wrong)} must be strings")
    return {name: str(value) for name, value in document.items()}


def resolve(env: Mapping[str, str], url: str | None = None, ca_file: str | None = None) -> Settings:
    """Options first (URL and CA only), then the environment, then the config file."""
    file = read_config(config_path(env), required=bool(env.get("KEYRINGCTL_CONFIG")))
    chosen_url = url or env.get("KEYRINGCTL_URL") or file.get("url") or DEFAULT_URL
    token = env.get("KEYRINGCTL_TOKEN") or file.get("token") or ""
    if not token:
        raise CliError(AUTH, f"no admin token: set KEYRINGCTL_TOKEN or put token = \"...\" in {config_path(env)} "
                             "(mode 0600); keyringctl takes no token argument")
    settings = Settings(chosen_url.rstrip("/"), token.strip(), ca_file or env.get("KEYRINGCTL_CA_FILE")
                        or file.get("ca_file") or "")
    check_url(settings)
    return settings


def check_url(settings: Settings) -> None:
    """http(s) only; the token in clear only to this machine; a CA file that exists."""
    parts = urlsplit(settings.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(USAGE, f"admin URL {settings.url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise CliError(USAGE, f"refusing to send the admin token over plain http to {parts.hostname}: use https "
                              "(plain http only to localhost)")
    if settings.ca_file and not Path(settings.ca_file).is_file():
        raise CliError(USAGE, f"CA file {settings.ca_file} does not exist")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
