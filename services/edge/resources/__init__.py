"""Project-bound resources through the edge: files, caches, batches, operations, interactions.

Each of them lives in the Google Cloud project of the key that created it.
The handlers here build an ``upstream.Call`` from validated parts
(``wire.resource_path``; ids of bounded length and a strict alphabet), name
what the call refers to in ``Call.affinity`` (keyring leases the owner key or
a key of its project; a name it does not know is a 404 with no upstream
call) and, for calls that create or delete resources, a ``Call.settle``
(``bindings``) whose bindings the release carries, committed before the
client gets its answer (``forwarding``).

- ``interactions``: create (plain, streamed, background), get (streamed,
  resumed), delete, cancel.
- ``files``: get, delete, download; ``uploads``: the resumable upload, with
  the upload URL rewritten to this edge and sealed (``uploads.UploadSessions``).
- ``caches``: create, get, update, delete.
- ``jobs``: batches (get, cancel, delete) and long-running operations (poll);
  their creating calls are model actions (``dialects.gemini``).
- ``listing``: list calls, merged over the pool's projects.
"""
