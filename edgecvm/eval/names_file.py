"""Names files: the concept each class folder stands for, when its folder name does not say it well.

One line per renamed folder, ``folder<TAB>concept name`` (UTF-8; blank lines and
``#`` comments ignored); folders not listed keep the name made from their folder
name. Checked at load: every line has exactly two non-empty fields, each folder
is listed once, and the caller checks that every folder exists, so a typo is an
error rather than a class silently keeping its old name.
"""

from __future__ import annotations

from pathlib import Path

from edgecvm.errors import BadInputError

FORMAT = "one `folder<TAB>concept name` per line"


def read_names_file(path: Path) -> dict[str, str]:
    """Folder name -> concept name (whitespace collapsed), validated as the module docstring says."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInputError(f"{path}: names file not found; write {FORMAT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read names file ({exc}); save it as UTF-8 text with {FORMAT}") from None
    names: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        folder, concept = (fields[0].strip(), " ".join(fields[1].split())) if len(fields) == 2 else ("", "")
        if not folder or not concept:
            raise BadInputError(f"{path}:{lineno}: expected {FORMAT}, got {line.strip()!r}")
        if folder in names:
            raise BadInputError(f"{path}:{lineno}: folder {folder!r} is renamed twice")
        names[folder] = concept
    if not names:
        raise BadInputError(f"{path}: names file renames no folder; write {FORMAT}")
    return names
