-- Applies one evhost commit atomically (see `Commit` in host/src/broker/mod.rs and its
-- encoding in `RedisBroker::commit`, host/src/broker/redis/mod.rs).
--
-- KEYS and ARGV: the commit is a sequence of ops. Op number k names its key in KEYS[k] (a
-- settlement's stream counts as an op, followed by its own ops); ARGV holds the ops one after
-- the other, each a letter and its arguments:
--
--   A <n> <field> <value>...            XADD KEYS[k] * with n field/value pairs
--   S <value>                           SET KEYS[k] <value>
--   D                                   DEL KEYS[k]
--   R <id>                              XDEL KEYS[k] <id>
--   I <delta>                           INCRBY KEYS[k] <delta>
--   E <digest>                          a precondition: KEYS[k] still holds the value whose
--                                       SHA-1 is <digest> (hex), or is absent (`-`)
--   O <group> <consumer> <min> <max> <count>
--                                       looks up once which entries of KEYS[k] between <min>
--                                       and <max> are pending for <consumer> in <group>
--   T <group> <consumer> <id> <n>       a settlement: the next n ops, and an XACK of <id>,
--                                       apply only if <id> is still pending for <consumer>,
--                                       every E among them holds and every key an I names
--                                       holds a counter; if <id> is pending but a condition
--                                       fails, the settlement is conflicted, and so is every
--                                       later T of the commit (their effects keep their order)
--   U <group> <consumer> <n> <id>...    n settlements without ops (the common case), in one
--                                       op: acknowledged without the ownership check
--   F <owner>                           fencing: KEYS[k] (a partition's lease) holds <owner>,
--                                       else the whole commit fails with `FENCED <k>` before
--                                       anything is written
--   K <ttl>                             once only: if KEYS[k] (the commit's mark) exists, this
--                                       commit ran already, and its recorded reply is returned
--                                       without writing anything; else the reply is recorded
--                                       there for <ttl> ms. A client that sends a commit again
--                                       after losing its reply (the cluster client does) gets
--                                       the first run's answer, not "skipped".
--
-- The acks of a commit go out as one XACK per stream and group, at the end.
--
-- Why settlements without ops skip the ownership check: the check exists so that the effects
-- of only one handling of an entry are committed when another consumer took the entry over
-- meanwhile. A settlement without ops commits no effects; acknowledging an entry that another
-- consumer now holds only makes that consumer's later settlement of it a skipped duplicate,
-- which leaves exactly one handling committed as well. The check is the costliest part of the
-- script (the XPENDING reply becomes Lua tables), so an acknowledgement-only batch avoids it.
--
-- Every group named by O, T or U is checked first; a missing one fails the whole commit with
-- `NOGROUP <k>` (its key index) before anything is written.
--
-- Returns two lists: the ids of the settlements it skipped (not pending for the consumer),
-- and of those it did not apply because of a conflict (still pending: handled again).
--
-- A counter is what INCRBY writes (a decimal integer, no '+', no leading zeros) within
-- +-(2^53 - 1), where Lua's numbers are exact; the result must stay there too. The host
-- checks the same when a plugin increments (host/src/broker/expect.rs), so that INCRBY never
-- fails half way through a commit.

-- Number of ARGV slots the op starting at ARGV[a] takes.
local function width(a)
  local op = ARGV[a]
  if op == 'A' then return 2 + 2 * tonumber(ARGV[a + 1])
  elseif op == 'S' or op == 'R' or op == 'I' or op == 'E' or op == 'F' or op == 'K' then return 2
  elseif op == 'D' then return 1
  elseif op == 'T' then return 5
  elseif op == 'O' then return 6
  elseif op == 'U' then return 4 + tonumber(ARGV[a + 3])
  end
  error('unknown commit op ' .. tostring(op))
end
-- Whether `group` is missing on `stream` (or the stream itself is).
local function missing(stream, group)
  local ok = redis.pcall('XINFO', 'CONSUMERS', stream, group)
  if type(ok) == 'table' and ok.err then
    if string.find(ok.err, 'NOGROUP', 1, true) == 1 or string.find(ok.err, 'no such key', 1, true) then
      return true
    end
    error(ok.err)
  end
  return false
end
-- Applies the write op starting at ARGV[a] to KEYS[k].
local function apply(a, k)
  local op = ARGV[a]
  if op == 'A' then
    redis.call('XADD', KEYS[k], '*', unpack(ARGV, a + 2, a + 1 + 2 * tonumber(ARGV[a + 1])))
  elseif op == 'S' then redis.call('SET', KEYS[k], ARGV[a + 1])
  elseif op == 'D' then redis.call('DEL', KEYS[k])
  elseif op == 'R' then redis.call('XDEL', KEYS[k], ARGV[a + 1])
  elseif op == 'I' then redis.call('INCRBY', KEYS[k], ARGV[a + 1])
  end
end
local MAX_COUNTER = 9007199254740991
-- Whether `value` (a GET reply) plus `delta` is a counter within range.
local function counts(value, delta)
  local n = 0
  if value then
    if not (value == '0' or string.match(value, '^%-?[1-9]%d*$')) then return false end
    if #value > 17 then return false end
    n = tonumber(value)
    if math.abs(n) > MAX_COUNTER then return false end
  end
  return math.abs(n + tonumber(delta)) <= MAX_COUNTER
end
-- Whether the conditions of the n ops starting at ARGV[a], KEYS[k] hold.
local function conditions_hold(a, k, n)
  local written = {}
  for _ = 1, n do
    local op = ARGV[a]
    if op == 'E' then
      local value = redis.call('GET', KEYS[k])
      local digest = '-'
      if value then digest = redis.sha1hex(value) end
      if digest ~= ARGV[a + 1] then return false end
    elseif op == 'I' and not written[KEYS[k]] then
      if not counts(redis.call('GET', KEYS[k]), ARGV[a + 1]) then return false end
    end
    if op ~= 'E' then written[KEYS[k]] = true end
    a = a + width(a)
    k = k + 1
  end
  return true
end
local nargs = #ARGV
local a, k = 1, 1
local present = {}
-- First pass: every group exists and every fence holds, or nothing is written.
-- Consecutive ops mostly name the same stream and group: remember the last one checked.
local last_stream, last_group
local mark, mark_ttl
while a <= nargs do
  local op = ARGV[a]
  if op == 'K' then
    local recorded = redis.call('GET', KEYS[k])
    if recorded then return cjson.decode(recorded) end
    mark, mark_ttl = KEYS[k], ARGV[a + 1]
  end
  if op == 'F' and redis.call('GET', KEYS[k]) ~= ARGV[a + 1] then
    return redis.error_reply('FENCED ' .. k .. ' the lease ' .. KEYS[k] .. ' is not held by ' .. ARGV[a + 1])
  end
  if op == 'T' or op == 'O' or op == 'U' then
    local stream, group = KEYS[k], ARGV[a + 1]
    if stream ~= last_stream or group ~= last_group then
      -- Checked once per stream and group, not once per settlement.
      local key = stream .. '\0' .. group
      if not present[key] then
        if missing(stream, group) then
          return redis.error_reply('NOGROUP ' .. k .. ' no consumer group ' .. group .. ' on ' .. stream)
        end
        present[key] = true
      end
      last_stream, last_group = stream, group
    end
  end
  a = a + width(a)
  k = k + 1
end
local skipped = {}
local conflicted = {}
local owned = {}
local acks = {}
-- The set of entries owned by (stream, group, consumer), nil if no `O` op fetched it.
local owned_stream, owned_group, owned_consumer, owned_set
local function owned_by(stream, group, consumer)
  if stream ~= owned_stream or group ~= owned_group or consumer ~= owned_consumer then
    owned_stream, owned_group, owned_consumer = stream, group, consumer
    owned_set = owned[stream .. '\0' .. group .. '\0' .. consumer]
  end
  return owned_set
end
local function is_mine(stream, group, consumer, id)
  local set = owned_by(stream, group, consumer)
  if set then return set[id] == true end
  return #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0
end
-- The ids to acknowledge in (stream, group).
local acks_stream, acks_group, acks_list
local function acks_of(stream, group)
  if stream ~= acks_stream or group ~= acks_group then
    acks_stream, acks_group = stream, group
    local key = stream .. '\0' .. group
    if not acks[key] then acks[key] = { stream, group } end
    acks_list = acks[key]
  end
  return acks_list
end
-- Second pass: apply the ops in order.
a, k = 1, 1
while a <= nargs do
  local op = ARGV[a]
  if op == 'U' then
    local stream, group = KEYS[k], ARGV[a + 1]
    local n = tonumber(ARGV[a + 3])
    local list = acks_of(stream, group)
    for i = a + 4, a + 3 + n do
      list[#list + 1] = ARGV[i]
    end
    a = a + 4 + n
    k = k + 1
  elseif op == 'O' then
    -- The entries pending for a consumer in an id range, fetched once per batch.
    local set = {}
    local list = redis.call('XPENDING', KEYS[k], ARGV[a + 1], ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5]), ARGV[a + 2])
    for _, entry in ipairs(list) do set[entry[1]] = true end
    owned[KEYS[k] .. '\0' .. ARGV[a + 1] .. '\0' .. ARGV[a + 2]] = set
    a = a + 6
    k = k + 1
  elseif op == 'T' then
    local stream, group, consumer, id = KEYS[k], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
    local n = tonumber(ARGV[a + 4])
    local mine = is_mine(stream, group, consumer, id)
    a = a + 5
    k = k + 1
    local holds = mine and #conflicted == 0 and conditions_hold(a, k, n)
    for _ = 1, n do
      if holds then apply(a, k) end
      a = a + width(a)
      k = k + 1
    end
    if holds then
      local list = acks_of(stream, group)
      list[#list + 1] = id
    elseif mine then
      conflicted[#conflicted + 1] = id
    else
      skipped[#skipped + 1] = id
    end
  else
    apply(a, k)
    a = a + width(a)
    k = k + 1
  end
end
-- The acks, at most 1000 ids per XACK.
for _, ack in pairs(acks) do
  local first = 3
  while first <= #ack do
    local last = math.min(first + 999, #ack)
    redis.call('XACK', ack[1], ack[2], unpack(ack, first, last))
    first = last + 1
  end
end
if mark then
  -- cjson writes an empty list as `{}`, which decodes to an empty table all the same.
  redis.call('SET', mark, cjson.encode({ skipped, conflicted }), 'PX', mark_ttl)
end
return { skipped, conflicted }
