"""``mnistlab serve``: a local page to draw a digit and watch the networks respond (``app``)."""
