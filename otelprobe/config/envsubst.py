"""`${VAR}` references in config values: environment variables, defaults, `$$` escapes, secret files.

Follows OpenTelemetry's declarative-config substitution rules (opentelemetry-python
`_env_substitution.py`): the config loader calls `substitute` on each scalar value of the parsed
file, never on mapping keys and never on the raw text, so a substituted value containing a
newline or `: ` stays one scalar and cannot inject YAML structure. Every substituted value may be
a secret, so it is registered with `config.secrets` and redacted wherever it could leak.

Syntax, scanned left to right and never recursively (a value's own `${...}` stays literal):

- `${VAR}` or `${env:VAR}`: the variable; undefined is a problem.
- `${VAR:-default}`: the default (possibly empty) when VAR is undefined (a set but empty VAR
  stays empty, as in OTel; unlike the shell).
- `${file:PATH}`: the file's content without its trailing newline; relative to the config file.
- `$$`: a literal `$` (so `$${VAR}` is the literal text `${VAR}`).
- any other `${...}` is an invalid reference; a `$` not followed by `$` or `{` is literal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from otelprobe.settings.secrets import register_secret

# ENV-NAME and the optional ":-DEFAULT" of the OTel configuration data model's ABNF.
_ENV_REF: Final = re.compile(r"(?:env:)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)
_FILE_REF: Final = "file:"


@dataclass(slots=True)
class Substitution:
    """The result of substituting one value: the new text and what went wrong, if anything."""

    value: str
    changed: bool = False
    problems: list[str] = field(default_factory=list)


def substitute(
    text: str,
    *,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Substitution:
    """Replace every reference in one config value.

    Args:
        text: the scalar value as written in the file.
        environ: variables to read; `os.environ` by default.
        base_dir: where relative `${file:PATH}` paths start (the config file's directory).

    Returns:
        The substituted value; `problems` names each reference that could not be resolved
        (their text is left in place so later checks still see something).
    """
    env = os.environ if environ is None else environ
    out: list[str] = []
    result = Substitution(value=text)
    pos = 0
    while True:
        dollar = text.find("$", pos)
        if dollar < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:dollar])
        following = text[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            result.changed = True
            pos = dollar + 2
            continue
        close = text.find("}", dollar + 2) if following == "{" else -1
        if close < 0:
            # A lone "$", or "${" never closed: not a reference (the ABNF needs the brace).
            out.append("$")
            pos = dollar + 1
            continue
        reference = text[dollar + 2 : close]
        replacement = _resolve(reference, env, base_dir, result.problems)
        out.append(text[dollar : close + 1] if replacement is None else replacement)
        result.changed = True
        pos = close + 1
    result.value = "".join(out)
    return result


def _resolve(
    reference: str, env: Mapping[str, str], base_dir: Path | None, problems: list[str]
) -> str | None:
    if reference.startswith(_FILE_REF):
        return _read_secret_file(reference[len(_FILE_REF) :], base_dir, problems)
    match = _ENV_REF.fullmatch(reference)
    if match is None:
        problems.append(
            f"invalid reference ${{{reference}}}: expected ${{NAME}}, ${{NAME:-default}}, "
            "${env:NAME} or ${file:PATH} (write $$ for a literal $)"
        )
        return None
    name, default = match.group("name"), match.group("default")
    value = env.get(name)
    if value is None:
        if default is None:
            problems.append(
                f"environment variable {name} is not set and ${{{reference}}} has no default "
                f"(set it, or write ${{{name}:-default}})"
            )
            return None
        # A default is written in the file itself, so it is no secret.
        return default
    register_secret(value)
    return value


def _read_secret_file(path_text: str, base_dir: Path | None, problems: list[str]) -> str | None:
    path = Path(path_text.strip()).expanduser()
    if not path_text.strip():
        problems.append("invalid reference ${file:}: expected ${file:PATH}")
        return None
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        problems.append(f"cannot read secret file {path}: {reason}")
        return None
    # Files written by `echo` or editors end in a newline that is never part of the secret.
    if content.endswith("\r\n"):
        content = content[:-2]
    elif content.endswith("\n"):
        content = content[:-1]
    register_secret(content)
    return content
