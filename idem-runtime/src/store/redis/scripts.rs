//! The Lua scripts that decide: one script call (`EVALSHA`, reloaded on `NOSCRIPT` by
//! [`redis::Script`]) per claim, renew, completion, forget, release, append and purge. A script
//! runs atomically on the server and reads the time with `TIME` (the server's clock, never a
//! worker's). Every script touches the keys of one idem key and its group floor only, which share
//! one hash tag (see `layout.rs`), so each runs in one Redis Cluster slot.
//!
//! Changes are published on the store's channel for waiters and caches: forgets and releases
//! always (caches must drop the key), completions and stream appends only when a claim was told
//! `running` since the attempt began (it sets the record's `w` flag), so the common call, which
//! nobody waits for, sends no message to every subscribed process.

use redis::Script;

/// Helpers every script starts with.
///
/// What a script costs the server is mostly fixed overhead per `redis.call` (about as much as a
/// whole `SET` from a client) and conversions between Lua and Redis values; a Lua number handed
/// to `redis.call` is formatted with `%.17g`, dearer than the command it is an argument of. So
/// the hot paths pass text: the time as TIME's own digits, numbers through `string.format('%d')`,
/// client-sent numbers as sent.
const PRELUDE: &str = r#"
-- The server's time in ms, as a number and as text (TIME's digits: seconds, then the first
-- three of the six-digit microseconds).
local function now_ms()
  local t = redis.call('TIME')
  local text = t[1] .. string.sub('00000' .. t[2], -6, -4)
  return tonumber(text), text
end
local function int(n)
  return string.format('%d', n)
end
-- Deletions (forget, purge) and format-1 records: lifts the group's counter to `attempt`, so a
-- record numbered above it (a format-1 record could be) is never numbered again.
local function raise_floor(floor_key, attempt)
  local f = tonumber(redis.call('GET', floor_key) or '0')
  if attempt > f then redis.call('SET', floor_key, int(attempt)) end
end
-- Ends the log line of `attempt` in the attempts log (searched from the newest): its outcome,
-- end, error and cost (the attempt's cost JSON, kept as text). For attempts the log holds: a
-- superseded attempt completing late (fenced), and every attempt of a format-1 record.
local function end_line(log_key, attempt, outcome, err, cost, now)
  local n = redis.call('LLEN', log_key)
  for i = n - 1, 0, -1 do
    local line = cjson.decode(redis.call('LINDEX', log_key, i))
    if line.a == attempt then
      line.o = outcome
      line.e = now
      if err then line.x = err end
      if cost and cost ~= '' then line.c = cost end
      redis.call('LSET', log_key, i, cjson.encode(line))
      return
    end
  end
end
"#;

/// KEYS: record, log, floor. ARGV: op, fingerprint hex (`''`: none), lease ms, worker, how many
/// past attempts the log keeps, parent key hex (`''`: none), position in the parent (both
/// written only with a new record).
///
/// The new attempt's number is the group's counter, incremented (`INCR`): above every number
/// any key of the group ever had, so above this key's past attempts even after its record
/// expired or was deleted. The claim of a new key is `HSETNX` (which creates the record, or
/// finds one), `INCR` and one `HSET`. Claiming an existing record (a takeover, or a retry after
/// a failure) moves its attempt's line from the record to the attempts log first.
/// A claim told `running` flags the record (`w`), so its completion publishes.
/// Returns `{'reuse'}`, `{'running', attempt, lease ms left}`,
/// `{'completed', attempt, expires, kind, snapshot, fingerprint, cost}` or
/// `{'acquired', attempt, taken-over attempt (0: none)}`.
const CLAIM: &str = r#"
local now, now_text = now_ms()
if redis.call('HSETNX', KEYS[1], 'status', 'running') == 1 then
  local new = redis.call('INCR', KEYS[3])
  local attempt, lease = int(new), int(now + tonumber(ARGV[3]))
  if ARGV[2] == '' and ARGV[6] == '' then
    redis.call('HSET', KEYS[1], 'op', ARGV[1], 'attempt', attempt, 'lease', lease,
      'worker', ARGV[4], 'created', now_text, 'updated', now_text, 'as', now_text)
  else
    local fields = {'op', ARGV[1], 'attempt', attempt, 'lease', lease, 'worker', ARGV[4],
      'created', now_text, 'updated', now_text, 'as', now_text}
    if ARGV[2] ~= '' then
      table.insert(fields, 'fp')
      table.insert(fields, ARGV[2])
    end
    -- A record keeps the link it was created with.
    if ARGV[6] ~= '' then
      table.insert(fields, 'parent')
      table.insert(fields, ARGV[6])
      table.insert(fields, 'pos')
      table.insert(fields, ARGV[7])
    end
    redis.call('HSET', KEYS[1], unpack(fields))
  end
  return {'acquired', new, 0}
end
local r = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'lease', 'expires', 'fp', 'kind',
  'cost', 'snap')
local status = r[1]
local attempt = tonumber(r[2] or '0')
local live_c = status == 'completed' and (not r[4] or tonumber(r[4]) > now)
local live_r = status == 'running' and r[3] and tonumber(r[3]) > now
if live_c or live_r then
  if r[5] and ARGV[2] ~= '' and r[5] ~= ARGV[2] then return {'reuse'} end
  if live_r then
    -- Someone waits: the completion (or an append) must publish.
    redis.call('HSET', KEYS[1], 'w', '1')
    return {'running', attempt, tonumber(r[3]) - now}
  end
  return {'completed', attempt, r[4], r[6], r[8], r[5], r[7]}
end
-- An existing record: the attempt it holds ends here.
local new = redis.call('INCR', KEYS[3])
if new <= attempt then
  -- A format-1 record may be numbered above its group's counter.
  new = attempt + 1
  redis.call('SET', KEYS[3], int(new))
end
local took = 0
if status == 'running' then took = attempt end
local h = redis.call('HMGET', KEYS[1], 'as', 'worker', 'updated', 'err', 'ao')
if h[1] then
  local line = {a = attempt, w = h[2] or '', s = tonumber(h[1])}
  if status == 'running' then
    line.o = 'abandoned'
    line.e = now
  else
    line.o = h[5] or ((status == 'completed' and r[6] == 'ok') and 'completed' or 'failed')
    line.e = tonumber(h[3])
    if status == 'failed' then line.x = h[4] end
    if r[7] then line.c = r[7] end
  end
  local lines = redis.call('RPUSH', KEYS[2], cjson.encode(line))
  local cap = tonumber(ARGV[5])
  if lines > cap then redis.call('LTRIM', KEYS[2], -cap, -1) end
elseif status == 'running' then
  -- Format 1: the attempt's line is already in the log.
  end_line(KEYS[2], attempt, 'abandoned', false, false, now)
end
-- The log lives as long as the record: no expiry while it runs.
redis.call('PERSIST', KEYS[2])
if status ~= 'running' then
  -- A finished record claimed again: drop what its outcome left, and its expiry.
  redis.call('HDEL', KEYS[1], 'snap', 'kind', 'err', 'expires', 'fp', 'w', 'cost', 'ao')
  redis.call('PERSIST', KEYS[1])
end
local fields = {'op', ARGV[1], 'status', 'running', 'attempt', int(new),
  'lease', int(now + tonumber(ARGV[3])), 'worker', ARGV[4], 'updated', now_text, 'as', now_text,
  'h', '1'}
if ARGV[2] ~= '' then
  table.insert(fields, 'fp')
  table.insert(fields, ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(fields))
return {'acquired', new, took}
"#;

/// KEYS: record. ARGV: attempt, lease ms. Returns 1 (owned) or 0 (lost).
const RENEW: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if r[1] ~= 'running' or tonumber(r[2]) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'lease', int(now_ms() + tonumber(ARGV[2])))
return 1
"#;

/// KEYS: record, log, floor, chunks. ARGV: attempt, status (`completed`/`failed`), snapshot
/// kind, snapshot or error text, ttl ms, the attempt's logged outcome, channel, key hex, the
/// attempt's cost JSON (`''`: none).
/// The attempt's outcome goes to the record (`ao`, `updated` is its end); its stale `lease` and
/// `w` stay (read only while running; a new claim rewrites them). The common completion is
/// four commands: `TIME`, `HMGET`, `HSET`, `PEXPIREAT`; the log and the journal are expired
/// only when the record has them (`h`, `sa`).
/// Returns 1 (owned) or 0 (lost; the attempt's log line says `fenced`).
const COMPLETE: &str = r#"
local now, now_text = now_ms()
local r = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'sa', 'w', 'as', 'h')
if not r[1] then return 0 end
local err = false
if ARGV[2] == 'failed' then err = ARGV[4] end
-- Attempt numbers are written by `string.format('%d')` on both sides: equal as text.
if r[1] ~= 'running' or (r[2] ~= ARGV[1] and tonumber(r[2]) ~= tonumber(ARGV[1])) then
  local attempt = tonumber(ARGV[1])
  if tonumber(r[2]) == attempt and r[5] then
    -- Still the record's attempt, released by an operator meanwhile.
    redis.call('HSET', KEYS[1], 'ao', 'fenced')
  else
    end_line(KEYS[2], attempt, 'fenced', err, ARGV[9], now)
  end
  return 0
end
local exp = int(now + tonumber(ARGV[5]))
if err then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'updated', now_text, 'expires', exp,
    'ao', ARGV[6], 'err', err)
else
  redis.call('HSET', KEYS[1], 'status', 'completed', 'updated', now_text, 'expires', exp,
    'ao', ARGV[6], 'snap', ARGV[4], 'kind', ARGV[3])
end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'cost', ARGV[9]) end
redis.call('PEXPIREAT', KEYS[1], exp)
if r[6] then redis.call('PEXPIREAT', KEYS[2], exp) end
if r[3] then redis.call('PEXPIREAT', KEYS[4], exp) end
if not r[5] then
  -- A format-1 record: its attempt's line is in the log, and its number may lie above the
  -- group's counter.
  local attempt = tonumber(ARGV[1])
  end_line(KEYS[2], attempt, ARGV[6], err, ARGV[9], now)
  redis.call('PEXPIREAT', KEYS[2], exp)
  raise_floor(KEYS[3], attempt)
end
if r[4] then redis.call('PUBLISH', ARGV[7], ARGV[8]) end
return 1
"#;

/// KEYS: record, log, chunks, floor. ARGV: force (`1`/`0`), channel, key hex.
/// Returns `{'gone'}`, `{'deleted'}` or `{'running', attempt, op}` (refused).
const FORGET: &str = r#"
local now = now_ms()
local r = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'lease', 'op')
if not r[1] then
  redis.call('DEL', KEYS[2], KEYS[3])
  return {'gone'}
end
if ARGV[1] ~= '1' and r[1] == 'running' and r[3] and tonumber(r[3]) > now then
  return {'running', tonumber(r[2]), r[4]}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
raise_floor(KEYS[4], tonumber(r[2]))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'deleted'}
"#;

/// KEYS: record, log, chunks, floor. ARGV: ttl ms, channel, key hex. Returns 1 (released) or 0.
/// The released attempt stays the record's (`ao` = `released`); its stale `lease` stays.
const RELEASE: &str = r#"
local now, now_text = now_ms()
local r = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'as')
if r[1] ~= 'running' then return 0 end
local attempt = tonumber(r[2])
local exp = int(now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'status', 'failed', 'err', 'released by an operator',
  'updated', now_text, 'expires', exp, 'ao', 'released')
if not r[3] then
  -- Format 1: the attempt's line is in the log.
  end_line(KEYS[2], attempt, 'released', false, false, now)
  raise_floor(KEYS[4], attempt)
end
redis.call('PEXPIREAT', KEYS[1], exp)
redis.call('PEXPIREAT', KEYS[2], exp)
redis.call('PEXPIREAT', KEYS[3], exp)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// KEYS: record, chunks. ARGV: attempt, first chunk number, channel, key hex, then the chunks
/// (`<offset_ms>:<bytes>`). Returns 1 (owned) or 0 (lost).
const APPEND: &str = r#"
local attempt = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'sa', 'w')
if r[1] ~= 'running' or tonumber(r[2]) ~= attempt then return 0 end
if tonumber(r[3] or '0') ~= attempt then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'sa', int(attempt))
end
local have = redis.call('LLEN', KEYS[2])
local first = tonumber(ARGV[2])
if first <= have then
  local i = 5 + have - first
  while i <= #ARGV do
    local last = math.min(i + 999, #ARGV)
    redis.call('RPUSH', KEYS[2], unpack(ARGV, i, last))
    i = last + 1
  end
end
if r[4] then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"#;

/// KEYS: record, chunks. ARGV: attempt, from, limit. Returns the chunks (empty when the
/// journal is another attempt's).
const READ_CHUNKS: &str = r#"
if tonumber(redis.call('HGET', KEYS[1], 'sa') or '0') ~= tonumber(ARGV[1]) then return {} end
local limit = tonumber(ARGV[3])
if limit <= 0 then return {} end
local from = tonumber(ARGV[2])
return redis.call('LRANGE', KEYS[2], from, from + limit - 1)
"#;

/// KEYS: record, chunks. ARGV: attempt. Returns how many chunks the attempt journaled.
const COUNT_CHUNKS: &str = r#"
if tonumber(redis.call('HGET', KEYS[1], 'sa') or '0') ~= tonumber(ARGV[1]) then return 0 end
return redis.call('LLEN', KEYS[2])
"#;

/// KEYS: record, log, chunks, floor. ARGV: abandoned-after ms. Deletes the record if it expired
/// (a finished record Redis has not evicted yet) or its lease ended that long ago. Returns 1 or 0.
const PURGE: &str = r#"
local now = now_ms()
local r = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'lease', 'expires')
if not r[1] then return 0 end
local expired = r[4] and tonumber(r[4]) <= now
local abandoned = r[1] == 'running' and r[3] and tonumber(r[3]) <= now - tonumber(ARGV[1])
if not (expired or abandoned) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
raise_floor(KEYS[4], tonumber(r[2]))
return 1
"#;

/// KEYS: record, log. Returns `{log lines, current}`: the attempts log (past attempts, oldest
/// first) and the record's fields of [`CURRENT_ATTEMPT`](super::rows::CURRENT_ATTEMPT) (the
/// attempt it holds), read at one instant.
const ATTEMPTS: &str = r#"
return {redis.call('LRANGE', KEYS[2], 0, -1), redis.call('HMGET', KEYS[1], unpack(ARGV))}
"#;

/// KEYS: the ledger hash. ARGV: triples of field suffix (JSON `[op, unit]`), amount, replays.
/// Adds them all, atomically.
const ADD_AVOIDED: &str = r#"
for i = 1, #ARGV, 3 do
  redis.call('HINCRBYFLOAT', KEYS[1], 'a' .. ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[1], 'n' .. ARGV[i], ARGV[i + 2])
end
return 1
"#;

/// The loaded scripts of a store (their SHA1s are computed once).
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) forget: Script,
    pub(super) release: Script,
    pub(super) append: Script,
    pub(super) read_chunks: Script,
    pub(super) count_chunks: Script,
    pub(super) purge: Script,
    pub(super) add_avoided: Script,
    pub(super) attempts: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            claim: script(CLAIM),
            renew: script(RENEW),
            complete: script(COMPLETE),
            forget: script(FORGET),
            release: script(RELEASE),
            append: script(APPEND),
            read_chunks: script(READ_CHUNKS),
            count_chunks: script(COUNT_CHUNKS),
            purge: script(PURGE),
            add_avoided: script(ADD_AVOIDED),
            attempts: script(ATTEMPTS),
        }
    }

    /// The source of the claim script, for tools that run it outside the store (the bench's
    /// `redis-benchmark` baseline).
    pub(super) fn claim_source() -> String {
        format!("{PRELUDE}{CLAIM}")
    }
}
