"""The live claim of one ORCH task while a dispatcher runs it (:class:`Attempt`).

Shared by the dispatcher loop (:mod:`orch.dispatch.dispatcher`), which marks an attempt lost, and the Prefect
task that runs it (``tasks/dispatch.py``), which moves it on from attempt to attempt: it lives here, below both,
because the domain core never imports the tasks layer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from orch.dispatch.queue import Claim


@dataclass
class Attempt:
    """The live claim of one ORCH task while Prefect runs it; replaced as attempts move on."""

    claim: Claim
    lost: threading.Event = field(default_factory=threading.Event)  # cancelled or lease lost
    ended: threading.Event = field(default_factory=threading.Event)  # its final move is recorded
