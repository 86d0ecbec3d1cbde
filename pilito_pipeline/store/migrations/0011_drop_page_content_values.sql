-- page_content was folded into page_chunks (one asset fewer per page in a range run); its stored
-- intermediate values are never read again.
DELETE FROM asset_values WHERE asset_key = 'page_content';
