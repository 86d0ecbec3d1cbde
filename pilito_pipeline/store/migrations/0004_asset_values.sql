-- Intermediate Dagster asset values (page content, page chunks), one row per asset partition,
-- kept in the database so every run worker, wherever it runs, reads what another wrote.
CREATE TABLE asset_values (
    asset_key      text        NOT NULL,
    partition_key  text        NOT NULL,
    value          bytea       NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_key, partition_key)
);
CREATE INDEX asset_values_partition ON asset_values (partition_key);
