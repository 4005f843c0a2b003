"""Garbage-collector settings for the long-running processes (``ltfu serve``, ``ltfu worker``).

A request allocates thousands of short-lived containers. With Python's default young-generation
threshold (700) the collector runs many times per request, and each run over a big live Bundle is
costly; collecting less often trades a few MB of memory for that CPU. Objects that exist at start-up
(modules, the app, compiled statements) are frozen so that full collections skip them.
"""

from __future__ import annotations

import gc

from ltfu.settings import Settings


def tune_gc(settings: Settings) -> None:
    if settings.gc_gen0_threshold:
        gc.set_threshold(settings.gc_gen0_threshold, 20, 10)
    gc.collect()
    gc.freeze()
