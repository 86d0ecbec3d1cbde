-- Dagster's run/event storage lives in its own database beside the pipeline's.
CREATE DATABASE dagster OWNER pilito;
