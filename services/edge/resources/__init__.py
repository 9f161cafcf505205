"""Project-bound resources through the edge: files, caches, batches, operations, interactions and the rest.

Each of them lives in the Google Cloud project of the key that created it.
The handlers here build an ``upstream.Call`` from validated parts
(``wire.resource_path``; ids of bounded length and a strict alphabet), name
what the call refers to in ``Call.affinity`` (keyring leases the owner key or
a key of its project; a name it does not know is a 404 with no upstream
call) and, for calls that create or delete resources, a ``Call.settle``
(``bindings``) whose bindings the release carries, committed before the
client gets its answer (``forwarding``).

- ``kinds``: the table of kinds (files, caches, batches, agents, environments,
  webhooks, file search stores...), each a row; ``generic``: the one handler
  serving every row (create and bind, use, delete and unbind, list).
- ``interactions``: create (plain, streamed, background), get (streamed,
  resumed), delete, cancel.
- ``uploads``: resumable uploads of files and of the kinds that take them,
  with the upload URL rewritten to this edge and sealed
  (``sessions.UploadSessions``).
- ``listing``: list calls, merged over the pool's projects.
"""
