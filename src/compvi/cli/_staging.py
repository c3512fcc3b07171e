"""Outputs written all or nothing: staged in hidden folders beside their targets, then moved."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class StagedOutputs:
    """Write a job's outputs beside their targets, and move them into place only at the end.

    Each target gets a staged path in a hidden folder created in the target's own folder
    (so the final move is a rename on one file system). :meth:`commit` moves every staged
    output onto its target, putting any existing target aside first, and puts them all
    back if one move fails. Leaving the ``with`` block removes the hidden folders, with
    whatever is still in them: after a failure, nothing new is left behind.

    Parameters
    ----------
    targets
        Name → final path of each output (a file or a folder).

    """

    def __init__(self, targets: dict[str, Path]) -> None:
        self.targets = {name: Path(path) for name, path in targets.items()}
        self._folders: dict[Path, Path] = {}

    def __enter__(self) -> StagedOutputs:
        try:
            for target in self.targets.values():
                parent = target.parent.resolve()
                if parent not in self._folders:
                    self._folders[parent] = Path(
                        tempfile.mkdtemp(prefix=".compvi-staging-", dir=parent)
                    )
        except BaseException:
            self._remove_folders()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._remove_folders()

    def _remove_folders(self) -> None:
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()

    def path(self, name: str) -> Path:
        """Return where to write output ``name`` until :meth:`commit`."""
        target = self.targets[name]
        return self._folders[target.parent.resolve()] / target.name

    def commit(self) -> list[Path]:
        """Move the staged outputs onto their targets; return the targets written.

        A target whose output was not staged (not produced by this run) is removed if it
        exists, so that no stale output from an earlier run stays beside the new ones.
        """
        moved: list[tuple[Path, Path | None]] = []
        written = []
        try:
            for name, target in self.targets.items():
                staged = self.path(name)
                previous = None
                if target.exists() or target.is_symlink():
                    previous = staged.with_name(f".previous-{target.name}")
                    os.replace(target, previous)
                moved.append((target, previous))
                if staged.exists():
                    os.replace(staged, target)
                    written.append(target)
        except BaseException:
            for target, previous in reversed(moved):
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                if previous is not None:
                    os.replace(previous, target)
            raise
        return written
