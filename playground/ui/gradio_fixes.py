"""Every workaround for a gradio behaviour, in one place, each saying what it works around.

    calm_queue      the queue's 1 ms polling while idle
    PictureFiles    pictures as files written once (gradio rewrites a numpy picture's file)
    cache_folder    where those files go, so that gradio serves them without copying them
    Resend          unchanged outputs sent again, not skipped (a skip rebuilds the component)
    picture_editor  an ImageEditor that keeps a picture's own mode and explains bad uploads
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.data_classes import FileData
from PIL import Image

from playground.editing import open_image
from playground.errors import EditInputError

QUEUE_POLL_S = 0.01  # how often gradio's queue looks for an event to start (see calm_queue)


def calm_queue(demo: gr.Blocks, poll_s: float = QUEUE_POLL_S) -> None:
    """Let the queue of `demo` (after demo.queue()) look for events to start every `poll_s`.

    While it has nothing to start, gradio 6.31's queue sleeps 1 ms and looks again: about 850
    wake-ups a second on the 2-core machine, 7 % of a core in the server's event loop whether or
    not anyone uses the page, taken from the samplers during a run. Every 10 ms, an event waits
    at most 10 ms more to start (a run takes 1-2 s). `Queue.sleep_when_free` is gradio's own
    attribute, not an option of demo.queue(); where a gradio version lacks it, nothing changes."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and isinstance(getattr(queue, "sleep_when_free", None), (int, float)):
        queue.sleep_when_free = max(queue.sleep_when_free, poll_s)



def cache_folder() -> Path:
    """Gradio's own file cache (GRADIO_TEMP_DIR, else <temp>/gradio). A file an output names
    elsewhere is hashed and copied into it before it is served, at every update it is sent
    in; one already inside is served as it is. (Measured with a class of thirty streaming:
    the hashing, copying and path checks took a tenth of the page's CPU.)"""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


class PictureFiles:
    """Pictures handed to gradio as PNG files, each written once under its content's hash.

    Given a numpy picture, gradio 6 rewrites its cache file (truncate, then write) every time
    the same picture is sent again, and a browser still downloading it gets a truncated file.
    Files it copies into its cache atomically, and only once."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, picture: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="png", compress_level=1)
        data = buffer.getvalue()
        path = self.folder / f"{hashlib.sha1(data).hexdigest()}.png"
        if not path.exists():
            staging = path.with_suffix(f".{threading.get_ident()}.tmp")
            staging.write_bytes(data)
            os.replace(staging, path)
        return str(path)

    def convert(self, values: dict) -> dict:
        """The same outputs, with pictures (and galleries' pictures) as file paths; paths stay."""
        def convert(value):
            if isinstance(value, np.ndarray):
                return self.path(value)
            if isinstance(value, list) and value and isinstance(value[0], tuple):
                return [(self.path(img) if isinstance(img, np.ndarray) else img, caption) for img, caption in value]
            return value

        return {name: convert(value) for name, value in values.items()}



class Resend:
    """The outputs of each update of a stream: what changed, and every other output as it
    stands, not skipped. Gradio handles a skip (an empty update) by rebuilding the component
    and its API schema, 3.7 ms for a Gallery, about 100 ms a run in all. `once` outputs go with
    the first update only, and are skipped after it."""

    def __init__(self, steady: dict, once: dict):
        self.steady = dict(steady)
        self.once = dict(once)

    def __call__(self, changed: dict) -> dict:
        values, self.once = {**self.steady, **self.once, **changed}, {}
        self.steady.update(changed)
        return values


def picture_editor(**kwargs) -> gr.ImageEditor:
    """A gr.ImageEditor whose pictures reach the handler as PIL images in their own mode (16-bit
    greyscale, palette, ...: editing.load_picture converts them), and whose unreadable or huge
    uploads get a clear message instead of gradio's generic error. (One editor's method is
    replaced: a subclass would make gradio write a .pyi file next to this one.)"""
    editor = gr.ImageEditor(type="pil", **kwargs)

    def open_upload(file, flatten_on_white: bool = False):
        if file is None:
            return None
        try:
            return open_image(file.path if isinstance(file, FileData) else io.BytesIO(file))
        except EditInputError as exc:
            raise gr.Error(str(exc), title="Cannot edit") from None

    editor.convert_and_format_image = open_upload
    return editor

