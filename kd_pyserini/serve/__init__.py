"""``kd-serve``: Pyserini 2.x's REST server plus ``mode=hybrid|rerank`` on a search (docs/serving.md).

Why a layer at all (read from Pyserini 2.4's ``server/``): an index entry's ``base_index`` only names the Lucene
index the *documents* of the hits are read from (``backend.py`` ``_doc_store_lucene_searcher``; it must be a ``tf``
alias, ``config.py``); ``/v1/{index}/search`` takes no fusion or encoder parameter (``rest/routes/v1.py``); the MCP
tool ``fuse_search_results`` fuses two result lists the *client* passes, with one fixed method (centred min-max,
alpha 1, ``HybridSearcher._hybrid_results``). So Pyserini's server cannot serve a dense index and its BM25 index as
one hybrid, and kd_pyserini does not fork it: :func:`kd_pyserini.serve.app.create_app` builds Pyserini's own app
(same routes, API keys, load shedding, logs) and puts one route in front of its ``/v1/{index}/search`` that answers
``mode=hybrid`` (the dense index and its ``base_index`` fused by :mod:`kd_pyserini.fusion`, as ``kd-search --mode
hybrid``) and ``mode=rerank`` (BM25's top ``depth`` of the ``base_index`` re-scored with the dense index's vectors,
as ``kd-search --mode rerank``); without ``mode`` the request goes to Pyserini's handler unchanged.

Importing this package imports nothing; :mod:`kd_pyserini.serve.app` imports Pyserini's server (2.x only).
"""
