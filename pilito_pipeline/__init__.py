"""pilito_pipeline: crawl tenants' websites, chunk and embed their text, serve hybrid retrieval."""
