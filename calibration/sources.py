"""Where an event log lives: a local path, or a URL (``s3://``, ``gs://``, ``file://``…) read through fsspec.

A URL names a file (CSV, streamed here only, or Parquet) or a folder of Parquet (or CSV) files; both the
stream (calibration/stream.py) and the cluster (calibration/cluster.py) list such a dataset, and a local
folder, with `dataset_files`, so they read the same files in the same order. Object stores need fsspec's
package for them (s3fs, gcsfs, adlfs).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

from sim.errors import InputError

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(source: str | Path) -> bool:
    """A URL (``scheme://…``) rather than a local path."""
    return isinstance(source, str) and _URL.match(source) is not None


def same_columns(names: list[str], header: list[str], file: str | Path) -> None:
    """Refuse a dataset file whose columns (names and order) are not the first file's."""
    if names != header:
        raise InputError("the dataset's files have different columns", file=file, value=",".join(names),
                         hint=f"the first file has {','.join(header)}")


class Dataset(NamedTuple):
    """A log's files, as `dataset_files` lists them."""

    fs: Any  # the fsspec filesystem
    files: list[str]
    folder: bool  # a folder's files: all Parquet, whatever their names say, unless ``text``
    text: bool = False  # a folder's CSV files (it has no Parquet ones)

    @property
    def parquet(self) -> bool:
        """Parquet files (a folder's, unless ``text``; one file by its name), else CSV."""
        return not self.text if self.folder else is_parquet(Path(self.files[0]))


def is_parquet(path: Path) -> bool:
    """Parquet by its name (anything else is read as CSV, optionally compressed)."""
    return path.name.lower().endswith(PARQUET_SUFFIXES)


def dataset_files(source: str) -> Dataset:
    """The fsspec filesystem of a URL or local path and its files in sorted path order: a folder's files
    named *.parquet, *.pq or *.parq; without those, its *.csv, *.csv.gz and *.tsv files (``text``), else
    its files with no suffix at all (Parquet, as Hive, Athena and Trino name theirs); hidden and ``_``
    ones such as _SUCCESS skipped. Or the one file.
    The stream and the cluster list a folder with this one rule, so they read the same rows in one order."""
    fs, root = url_filesystem(source)
    try:
        if fs.isdir(root):
            shown = sorted(f for f in fs.find(root)
                           if not any(part.startswith(("_", ".")) for part in f[len(root):].split("/") if part))
            files = [f for f in shown if f.lower().endswith(PARQUET_SUFFIXES)]
            text = [f for f in shown if f.lower().endswith(_TEXT_SUFFIXES)]
            if not files and text:
                return Dataset(fs, text, True, True)
            files = files or [f for f in shown if "." not in f.rsplit("/", 1)[-1]]
            if not files:
                names = ", ".join("*" + suffix for suffix in (*PARQUET_SUFFIXES, *_TEXT_SUFFIXES))
                raise InputError("the folder holds no Parquet or CSV files", file=source,
                                 hint=f"expected files named {names} (or with no suffix, as Hive writes Parquet)")
            return Dataset(fs, files, True)
        if not fs.exists(root):
            raise InputError("event log not found", file=source, hint="check the URL")
    except OSError as exc:
        raise InputError(f"cannot read the event log: {str(exc).splitlines()[0][:200]}", file=source) from None
    return Dataset(fs, [root], False)


def url_filesystem(source: str) -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path inside it; one line when the scheme's package is missing."""
    import fsspec  # a dependency; imported here, as only URLs and the cluster need it

    try:
        return fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as exc:  # "Install s3fs to access S3", "Protocol not known: xyz"
        raise InputError(f"cannot open the URL: {str(exc).splitlines()[0][:200]}", file=source,
                         hint="install fsspec's package for this scheme (s3fs, gcsfs, adlfs), or copy the files "
                              "here") from None


def is_local(fs: Any) -> bool:
    """The filesystem is this machine's disk (its files can be hashed without a second download)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol
