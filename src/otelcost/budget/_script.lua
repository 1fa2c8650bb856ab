-- otelcost: evaluate the budgets of one service, atomically (one call per service per flush).
-- policy.py is the reference; every floating-point step below is written in the same order
-- so both produce bit-identical results (the differential test checks it).
--
-- KEYS[1]    enforce:throttle:{svc}          throttle flag (JSON reason, PX = release estimate)
-- KEYS[2]    otelcost:fence:{svc}:<producer> "<seq>:<now_ms>" (unused without a fence)
-- KEYS[2+i]  otelcost:budget:{svc}:<period>  hash: policy state, buckets "b:<id>", config "c:*"
-- ARGV[1]    now_ms, or "" to use the server clock (TIME): one clock for every writer, so
--            skewed app hosts cannot disagree about windows; tests pass an injected clock.
-- ARGV[2]    delta_nanos (non-negative integer)
-- ARGV[3..4] seq, first_seq ("" when absent)
-- ARGV[5..6] fence_ttl_ms, grace_ms (extra physical TTL beyond the logical expiry)
-- ARGV[7]    number of budgets n, then 10 values per budget: period, period_ms, bucket_ms,
--            window_ms, limit_nanos, alpha, consecutive, release_ratio, release_windows, hard_cap
-- Returns {"ok"|"dup", now, throttled, ttl_ms|"", flag|"", then per budget:
--          spend_nanos, ema (%.17g), over, under, hard_capped, ema_throttled}
--      or {"overlap", now, last_seq}.

local MAX_STEPS = 1000
local MIN_FLAG_TTL_MS = 1000
local BASE = 1000000000
local FLAG_PREFIX = '{"source":"otelcost"'
local MAX_EXACT = 9007199254740992 -- 2^53: doubles hold every integer below it

local function fail(message)
    error('otelcost budget script: ' .. message)
end

local function int_arg(value, what)
    if type(value) ~= 'string' or not string.match(value, '^%d+$') or #value > 16 then
        fail(what .. ' must be a non-negative integer below 2^53, got ' .. tostring(value))
    end
    local number = tonumber(value)
    if number >= MAX_EXACT then
        fail(what .. ' must be below 2^53')
    end
    return number
end

local function fraction_arg(value, what, lowest)
    local number = tonumber(value)
    if number == nil or number ~= number or number < lowest or number > 1 or number <= 0 then
        fail(what .. ' must be a number in (0, 1], got ' .. tostring(value))
    end
    return number
end

-- Exact non-negative integers of any size as {hi, lo} with lo < 10^9 (doubles are exact
-- only below 2^53 nanos, about 9 million currency units).
local function big(digits)
    local n = #digits
    if n <= 9 then
        return {0, tonumber(digits)}
    end
    return {tonumber(string.sub(digits, 1, n - 9)), tonumber(string.sub(digits, n - 8))}
end

local function add(a, b)
    local hi, lo = a[1] + b[1], a[2] + b[2]
    if lo >= BASE then
        hi, lo = hi + 1, lo - BASE
    end
    return {hi, lo}
end

local function ge(a, b)
    return a[1] > b[1] or (a[1] == b[1] and a[2] >= b[2])
end

local function str(a)
    if a[1] > 0 then
        return string.format('%d%09d', a[1], a[2])
    end
    return string.format('%d', a[2])
end

local function int(x)
    return string.format('%d', x)
end

-- The over/under counters and the latch after `windows` windows at the current EMA.
local function count(s, p, windows)
    if s.ema > p.limit_f then s.over = s.over + windows else s.over = 0 end
    if s.ema < p.release_f then s.under = s.under + windows else s.under = 0 end
    if s.over >= p.consecutive then
        s.latched = true
    elseif s.under >= p.release_windows then
        s.latched = false
    end
end

local function step(s, p, rate)
    s.ema = p.alpha * rate + (1 - p.alpha) * s.ema
    count(s, p, 1)
end

local function rate_of(s, p)
    return tonumber(s.wn) * p.period_ms / p.window_ms
end

local function close_empty_windows(s, p, gap)
    local steps = 0
    while gap > 0 do
        if s.ema < p.release_f and s.under >= p.release_windows then
            s.ema = s.ema * (1 - p.alpha) ^ gap
            s.under = s.under + gap
            s.latched = false
            return
        end
        if steps >= MAX_STEPS then
            s.ema = s.ema * (1 - p.alpha) ^ gap
            count(s, p, gap)
            return
        end
        step(s, p, 0)
        gap = gap - 1
        steps = steps + 1
    end
end

local function fresh_state()
    return {t = nil, window_ms = 0, window = 0, wn = '0', ema = 0, over = 0, under = 0,
            latched = false, buckets = {}}
end

local function load_state(key)
    local s = fresh_state()
    local flat = redis.call('HGETALL', key)
    local raw = {}
    for i = 1, #flat, 2 do
        local field, value = flat[i], flat[i + 1]
        if string.sub(field, 1, 2) == 'b:' then
            s.buckets[tonumber(string.sub(field, 3))] = value
        else
            raw[field] = value
        end
    end
    if raw.t then
        s.t = tonumber(raw.t)
        s.window_ms = tonumber(raw.wms)
        s.window = tonumber(raw.w)
        s.wn = raw.wn
        s.ema = tonumber(raw.ema)
        s.over = tonumber(raw.over)
        s.under = tonumber(raw.under)
        s.latched = raw.latch == '1'
    end
    s.dropped = {}
    return s
end

local function advance(s, p, now)
    if s.t and now - s.t > p.period_ms + p.bucket_ms then
        -- Idle for longer than the period: start over (every bucket is dropped below).
        s.t, s.window_ms, s.window, s.wn = nil, 0, 0, '0'
        s.ema, s.over, s.under, s.latched = 0, 0, 0, false
    end
    local window = math.floor(now / p.window_ms)
    if s.t == nil or s.window_ms ~= p.window_ms then
        s.window_ms = p.window_ms
        s.window = window
        s.wn = '0'
    elseif window > s.window then
        step(s, p, rate_of(s, p))
        close_empty_windows(s, p, window - s.window - 1)
        s.window = window
        s.wn = '0'
    end
    local lowest = math.floor(now / p.bucket_ms) - p.buckets + 1
    for bucket, _ in pairs(s.buckets) do
        if bucket < lowest then
            s.dropped[#s.dropped + 1] = 'b:' .. int(bucket)
            s.buckets[bucket] = nil
        end
    end
    s.t = now
end

local function cap_release_ms(s, p, now)
    local current = math.floor(now / p.bucket_ms)
    local newer = {0, 0}
    for bucket = current, current - p.buckets + 1, -1 do
        local value = s.buckets[bucket]
        if value then newer = add(newer, big(value)) end
        if ge(newer, p.limit) then
            return (bucket + p.buckets) * p.bucket_ms - now
        end
    end
    return 0
end

local function ema_release_ms(s, p, now)
    local sim = {ema = s.ema, over = s.over, under = s.under, latched = s.latched}
    step(sim, p, rate_of(s, p))
    local windows = 1
    while sim.latched and windows < MAX_STEPS do
        step(sim, p, 0)
        windows = windows + 1
    end
    return (s.window + windows) * p.window_ms - now
end

-- Arguments.
local delta_digits = ARGV[2]
local delta = int_arg(delta_digits, 'delta_nanos')
local seq, first_seq
if ARGV[3] ~= '' then seq = int_arg(ARGV[3], 'seq') end
if ARGV[4] ~= '' then first_seq = int_arg(ARGV[4], 'first_seq') end
local fence_ttl = int_arg(ARGV[5], 'fence_ttl_ms')
local grace = int_arg(ARGV[6], 'grace_ms')
local n = int_arg(ARGV[7], 'number of budgets')
if #KEYS ~= n + 2 or #ARGV ~= 7 + 10 * n then
    fail('expected ' .. int(n + 2) .. ' keys and ' .. int(7 + 10 * n) .. ' arguments')
end

local params, states = {}, {}
for i = 1, n do
    local a = 7 + 10 * (i - 1)
    local period = ARGV[a + 1]
    if not string.match(period, '^%w+$') then fail('bad period name ' .. period) end
    local p = {
        period = period,
        period_ms = int_arg(ARGV[a + 2], 'period_ms'),
        bucket_ms = int_arg(ARGV[a + 3], 'bucket_ms'),
        window_ms = int_arg(ARGV[a + 4], 'window_ms'),
        limit_digits = ARGV[a + 5],
        limit_f = tonumber(ARGV[a + 5]),
        alpha_digits = ARGV[a + 6],
        alpha = fraction_arg(ARGV[a + 6], 'alpha', 0),
        consecutive = int_arg(ARGV[a + 7], 'consecutive'),
        release_digits = ARGV[a + 8],
        release_ratio = fraction_arg(ARGV[a + 8], 'release_ratio', 0),
        release_windows = int_arg(ARGV[a + 9], 'release_windows'),
        hard_cap = ARGV[a + 10] == '1',
    }
    if not string.match(p.limit_digits, '^[1-9]%d*$') or #p.limit_digits > 24 then
        fail('limit_nanos must be a positive integer, got ' .. p.limit_digits)
    end
    if p.bucket_ms < 1 or p.window_ms < 1 or p.consecutive < 1
        or p.release_windows < 1 or p.period_ms % p.bucket_ms ~= 0 then
        fail('budget ' .. period .. ': limit, bucket, window and counts must be positive')
    end
    if ARGV[a + 10] ~= '0' and ARGV[a + 10] ~= '1' then fail('hard_cap must be 0 or 1') end
    p.limit = big(p.limit_digits)
    p.buckets = p.period_ms / p.bucket_ms
    p.release_f = p.release_ratio * p.limit_f
    params[i] = p
    states[i] = load_state(KEYS[2 + i])
end

-- The clock: injected or the server's, never earlier than what this service has seen.
local now
if ARGV[1] == '' then
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
else
    now = int_arg(ARGV[1], 'now_ms')
end
for i = 1, n do
    if states[i].t and states[i].t > now then now = states[i].t end
end

-- The fence.
local kind = 'ok'
if seq then
    local record = redis.call('GET', KEYS[2])
    if record then
        local last_digits, at = string.match(record, '^(%d+):(%d+)$')
        if last_digits and now - tonumber(at) <= fence_ttl then
            local last = tonumber(last_digits)
            if seq <= last then
                kind = 'dup'
            elseif first_seq and first_seq <= last then
                return {'overlap', int(now), last_digits}
            end
        end
    end
end
if kind == 'dup' then
    delta = 0
    delta_digits = '0'
end

-- Evaluate every budget.
local out = {}
local throttling = {}
local ttl = 0
local delta_big = big(delta_digits)
for i = 1, n do
    local p, s = params[i], states[i]
    advance(s, p, now)
    local current = math.floor(now / p.bucket_ms)
    if delta > 0 then
        s.buckets[current] = str(add(big(s.buckets[current] or '0'), delta_big))
        s.wn = str(add(big(s.wn), delta_big))
    end
    local spend = {0, 0}
    for _, value in pairs(s.buckets) do
        spend = add(spend, big(value))
    end
    local capped = p.hard_cap and ge(spend, p.limit)
    if capped then
        local ms = cap_release_ms(s, p, now)
        if ms > ttl then ttl = ms end
    end
    if s.latched then
        local ms = ema_release_ms(s, p, now)
        if ms > ttl then ttl = ms end
    end
    s.spend_digits = str(spend)
    if capped or s.latched then
        local reason = 'ema'
        if capped and s.latched then reason = 'hard_cap+ema' elseif capped then reason = 'hard_cap' end
        throttling[#throttling + 1] = string.format(
            '{"period":"%s","reason":"%s","spend_nanos":%s,"limit_nanos":%s}',
            p.period, reason, s.spend_digits, p.limit_digits)
    end
    local o = #out
    out[o + 1] = s.spend_digits
    out[o + 2] = string.format('%.17g', s.ema)
    out[o + 3] = int(s.over)
    out[o + 4] = int(s.under)
    out[o + 5] = capped and '1' or '0'
    out[o + 6] = s.latched and '1' or '0'
end

local throttled = #throttling > 0
local flag = ''
if throttled then
    if ttl < MIN_FLAG_TTL_MS then ttl = MIN_FLAG_TTL_MS end
    flag = FLAG_PREFIX .. ',"at":' .. int(now) .. ',"budgets":[' .. table.concat(throttling, ',') .. ']}'
end

-- Persist (a duplicate changes nothing).
if kind == 'ok' then
    for i = 1, n do
        local p, s, key = params[i], states[i], KEYS[2 + i]
        if #s.dropped > 0 then
            redis.call('HDEL', key, unpack(s.dropped))
        end
        local fields = {
            't', int(s.t), 'wms', int(s.window_ms), 'w', int(s.window), 'wn', s.wn,
            'ema', string.format('%.17g', s.ema), 'over', int(s.over), 'under', int(s.under),
            'latch', s.latched and '1' or '0', 'c:limit', p.limit_digits, 'c:alpha', p.alpha_digits,
            'c:cons', int(p.consecutive), 'c:rr', p.release_digits,
            'c:rw', int(p.release_windows), 'c:hc', p.hard_cap and '1' or '0',
        }
        if delta > 0 then
            local current = math.floor(now / p.bucket_ms)
            fields[#fields + 1] = 'b:' .. int(current)
            fields[#fields + 1] = s.buckets[current]
        end
        redis.call('HSET', key, unpack(fields))
        redis.call('PEXPIRE', key, p.period_ms + p.bucket_ms + grace)
    end
    if seq then
        redis.call('SET', KEYS[2], int(seq) .. ':' .. int(now), 'PX', fence_ttl + grace)
    end
    if throttled then
        redis.call('SET', KEYS[1], flag, 'PX', ttl)
    else
        local current = redis.call('GET', KEYS[1])
        if current and string.sub(current, 1, #FLAG_PREFIX) == FLAG_PREFIX then
            redis.call('DEL', KEYS[1])
        end
    end
end

local result = {kind, int(now), throttled and '1' or '0', throttled and int(ttl) or '', flag}
for _, value in ipairs(out) do
    result[#result + 1] = value
end
return result
