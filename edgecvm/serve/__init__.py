"""``edgecvm serve``: a web page and a JSON API to teach and watch a device while it learns from its stream.

session.py (the learn loop on a thread and what the page shows), app.py (the
Starlette app and its API), access.py (token, origin and size checks),
server.py (uvicorn). The page itself is static/ (no build step, no CDN).
"""
