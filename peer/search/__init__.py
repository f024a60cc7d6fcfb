"""Search: the embedder, the hnswlib index, rank fusion and the index's sidecar.

The package face is deliberately empty of imports: :mod:`peer.search.index`
loads hnswlib and numpy and :mod:`peer.search.embedder` onnxruntime, which
commands that never search must not pay for. Import the module you need.
"""
