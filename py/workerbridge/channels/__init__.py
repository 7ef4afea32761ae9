"""The page halves of the built-in channels and their pure helpers: ``crypto`` (with
``aead``, ``gcm_records``, ``algorithms``), ``file`` (with ``magic``, ``imagesize``,
``manifest``), ``compression`` and ``network``; ``base`` holds what every namespace is
built on. Each page half is named after its worker half in ``workers/``.

Depends on ``core``, ``runtime`` and ``pool``; a namespace needs only a ``Requester``
(``base``), not the bridge.
"""
