"""The jobs API: clients queue jobs, private workers claim them, payloads and results go through
transfer channels, never stored on the server.

``server.py`` holds the routes; ``service.py`` the engine (deadlines, event streams, state,
metrics); ``store.py`` the store interface (atomic steps; how Redis would map them) and
``memory.py`` its in-process implementation; ``model.py`` the states, the transition table and the
JSON views; ``activity.py`` the workers seen lately.
"""
