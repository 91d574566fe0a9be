"""Folder datasets: a dataset as files on disk (manifest, frame table, images, maps, clinical tables).

The format is documented in docs/data-format.md. One concept per module: ``manifest`` (``lusbench.json``),
``csvfile`` (tables with line numbers), ``frames`` (the frame table), ``clinical`` (visits and patients, S/F
rules), ``readers`` (decoding files), ``resize`` (the size policy), ``problems`` (every problem, with file and
line), ``loader`` (putting it together), ``cache`` (decoded datasets keyed by content), ``layout`` (a dataset as
named arrays), ``export`` (writing any dataset in this format), ``scaffold`` (``data init``).
"""

from lusbench.data.folder.loader import Loaded, load_folder
from lusbench.data.folder.problems import FolderDatasetError, Problem

__all__ = ["FolderDatasetError", "Loaded", "Problem", "load_folder"]
