"""Files in and out: image decoding (``images``), video frames and media discovery (``video``), the one atomic
writer (``atomic``) and the result, lock and progress files of ``tcdcn predict`` (``results``).

Depends only on the shared vocabulary (``tcdcn.errors``); nothing here knows about models."""
