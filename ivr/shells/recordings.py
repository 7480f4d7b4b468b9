"""Recordings made by Asterisk (ARI's stored recordings), kept by Hotline: fetched, written whole and
private under ``config.recordings_dir``, then deleted from Asterisk. The one way the contact center's
recordings and voicemails and an Incoming Call Policy's voicemails are kept."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ivr.asterisk.ari import AriClient, AriError, AriNotFound
from ivr.config import private_dir


class NotKept(Exception):
    """The recording could not be fetched from Asterisk or written; the message says why."""


async def keep_recording(ari: AriClient, name: str, recordings_dir: Path, relative: Path) -> None:
    """Asterisk's stored recording ``name`` into ``recordings_dir / relative``, then deleted from
    Asterisk (a failed delete only leaves a file there). Raises :class:`NotKept`."""
    try:
        body = await ari.stored_recording(name)
    except AriError as exc:
        raise NotKept(f"could not fetch the recording {name} from Asterisk: {exc}") from None
    target = recordings_dir / relative
    try:
        await asyncio.to_thread(write_private, target, body)
    except OSError as exc:
        raise NotKept(f"could not save the recording to {target}: {exc}") from None
    try:
        await ari.delete_stored_recording(name)
    except AriNotFound:
        pass
    except AriError:
        pass  # kept here; only Asterisk's copy stays behind


def write_private(target: Path, body: bytes) -> None:
    """Recordings are private: the directories 0700, the file 0600, never half-written."""
    private_dir(target.parent)
    tmp = target.with_suffix(".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
    os.replace(tmp, target)
