"""Problems found in a folder dataset, each naming the file and the line, collected rather than raised one by one.

A user fixing a dataset wants the whole list at once (``lusbench data validate`` prints every problem), so the
loader keeps going after a bad row and raises :class:`FolderDatasetError` with all of them at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lusbench.errors import UserError


@dataclass(frozen=True)
class Problem:
    """One problem: ``file`` relative to the dataset folder, ``line`` in it (1 = a CSV's header) or None."""

    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class Problems:
    """The problems and notices of one load. Notices (e.g. a patient without a clinical row) do not stop it."""

    items: list[Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def add(self, file: str, message: str, line: int | None = None) -> None:
        self.items.append(Problem(file, message, line))

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, root: str) -> None:
        if self.items:
            raise FolderDatasetError(root, list(self.items))


class FolderDatasetError(UserError):
    """A folder dataset is invalid. ``str()`` is one line (the first problem and how many more there are);
    ``problems`` holds every one, for ``lusbench data validate`` to list."""

    def __init__(self, root: str, problems: list[Problem]) -> None:
        self.root = root
        self.problems = problems
        more = len(problems) - 1
        plural = "s" if more > 1 else ""
        tail = f" (and {more} more problem{plural}: lusbench data validate {root} lists them all)" if more else ""
        super().__init__(f"dataset folder {root}: {problems[0]}{tail}")
