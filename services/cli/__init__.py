"""keyringctl: the command-line client of the admin REST API (``services/admin/api.py``).

Synchronous and standard-library only (urllib, argparse, tomllib): a tool an
operator runs from a laptop or a CI job. One module per command group
(``pools``, ``keys``, ``tokens``, ``reports``, ``transfer``), the shared parts
apart: where the URL and admin token come from (``settings``), the HTTP calls
and their failures (``client``), tables and JSON (``output``), exit codes
(``errors``), how a command is declared (``commands``), shell completion
(``completion``), and the key file it shares with ``scripts/start.sh --keys``
(``key_file``).
"""
