-- pgbench script: the minimal SQL of a hit (one indexed read of a completed key).
\set k random(1, 10000)
SELECT snapshot FROM idem_pgbench WHERE key = decode(lpad(to_hex(:k::int8), 64, '0'), 'hex') AND status = 'completed';
