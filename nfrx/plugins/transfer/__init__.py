"""The transfer API: one-time channels that stream bytes from one writer to one reader.

``server.py`` holds the routes (``/api/transfer``); ``channels.py`` the in-process channel registry
and the relay itself. The jobs API creates its payload and result channels here.
"""
