"""The command layer's own modules: each parses its options and calls the library.

``mobileunet.cli`` routes ``python -m mobileunet COMMAND`` to them; nothing in the library imports them.
"""
