-- Tables of the pgbench baseline (records, and the application rows of the step script), and
-- 10,000 completed keys for the hit script.
DROP TABLE IF EXISTS idem_pgbench;
DROP TABLE IF EXISTS idem_pgbench_app_rows;
CREATE TABLE idem_pgbench_app_rows (key bytea NOT NULL, n int8 NOT NULL);
CREATE TABLE idem_pgbench (key bytea PRIMARY KEY, status text NOT NULL, attempt int8 NOT NULL,
                           snapshot bytea, lease_until timestamptz, expires_at timestamptz);
INSERT INTO idem_pgbench (key, status, attempt, snapshot, expires_at)
SELECT decode(lpad(to_hex(k), 64, '0'), 'hex'), 'completed', 1, '\x7b7d', now() + interval '1 day'
FROM generate_series(1, 10000) AS k;
