-- pgbench script: the minimal SQL of a transactional step (claim insert, one application insert,
-- fenced complete update, one transaction).
\set k random(1, 1000000000000)
BEGIN;
INSERT INTO idem_pgbench (key, status, attempt, lease_until) VALUES (decode(lpad(to_hex(:k::int8), 64, '0'), 'hex'), 'running', 1, now() + interval '30 seconds') ON CONFLICT DO NOTHING;
INSERT INTO idem_pgbench_app_rows (key, n) VALUES (decode(lpad(to_hex(:k::int8), 64, '0'), 'hex'), 1);
UPDATE idem_pgbench SET status = 'completed', snapshot = '\x7b7d', lease_until = NULL, expires_at = now() + interval '1 day' WHERE key = decode(lpad(to_hex(:k::int8), 64, '0'), 'hex') AND attempt = 1 AND status = 'running';
COMMIT;
