"""One module per corpus, each with a ``prepare_<corpus>()`` that writes validated manifests."""
