"""Plain-Python ingestion steps over the layers below: one website crawl (`crawl_session`), and
chunks → embedded knowledge rows for pages, manual and FAQ text (`sources`). `defs/` calls these."""
