-- `page_chunks` hands its values to `chunk_embeddings` in the run's memory (defs/io_managers.py):
-- no third copy of every page is kept. The pickled values stored by earlier versions go.
DROP TABLE IF EXISTS asset_values;
