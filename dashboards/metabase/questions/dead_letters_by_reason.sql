-- name: Dead letters by reason
-- description: Input the pipeline could not use, by source and reason.
-- display: table
-- visualization_settings: {}
SELECT source, reason, messages, last_received
FROM dead_letters_by_reason
ORDER BY messages DESC
