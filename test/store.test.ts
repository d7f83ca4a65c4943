import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Store, entrySize, recordedBody, type StoredResponse } from '../src/cache/store.js'
import { computeFreshness } from '../src/cache/policy.js'
import type { RequestHeaders, ResponseHeaders } from '../src/headers.js'

const T = Date.UTC(2024, 0, 15, 12, 0, 0)

// Host names of one length and one-digit paths, so every plain entry has the same size.
const A = 'a.example'
const B = 'b.example'
const C = 'c.example'
const D = 'd.example'

function url (host: string, i: number): string {
  return `https://${host}/item-${i}`
}

interface MakeOptions {
  body?: number
  /** Request header values the response varies on, e.g. { 'accept-encoding': 'gzip' }. */
  vary?: Record<string, string>
  headers?: ResponseHeaders
}

function make (u: string, opts: MakeOptions = {}): StoredResponse {
  const bodyLength = opts.body ?? 100
  const headers: ResponseHeaders = { 'cache-control': 'max-age=60', 'content-length': String(bodyLength), ...opts.headers }
  const req: RequestHeaders = {}
  if (opts.vary !== undefined) {
    headers.vary = Object.keys(opts.vary).join(', ')
    Object.assign(req, opts.vary)
  }
  return {
    status: 200,
    statusText: 'OK',
    headers,
    body: [Buffer.alloc(bodyLength)],
    bodyLength,
    freshness: computeFreshness(200, req, headers, T, T),
    size: entrySize(u, headers, bodyLength)
  }
}

/** The size of one plain entry made by make(url(host, digit)). */
const S = make(url(A, 1)).size

function sum (list: readonly StoredResponse[]): number {
  return list.reduce((n, r) => n + r.size, 0)
}

test('entrySize counts the body, the URL, every header and a fixed overhead', () => {
  const u = 'https://a.example/x'
  const base = entrySize(u, {}, 0)
  assert.ok(base > u.length, 'some fixed overhead beyond the URL')
  assert.equal(entrySize(u, {}, 1000), base + 1000)
  assert.equal(entrySize(`${u}/longer`, {}, 0), base + '/longer'.length)
  const one = entrySize(u, { etag: '"abc"' }, 0)
  assert.ok(one >= base + 'etag'.length + '"abc"'.length)
  const two = entrySize(u, { 'set-cookie': ['a=1', 'b=2'] }, 0)
  const single = entrySize(u, { 'set-cookie': 'a=1' }, 0)
  assert.ok(two > single, 'each value of a repeated header is charged')
  // The helper's entries really are all the same size, which the budget tests rely on.
  assert.equal(make(url(B, 7)).size, S)
  assert.equal(make(url(A, 1), { vary: { 'accept-encoding': 'gzip' } }).size, make(url(A, 1), { vary: { 'accept-encoding': 'br' } }).size)
})

test('bytes equal the sum of the stored entries and return to 0 after deletes', () => {
  const store = new Store({ maxSize: 1_000_000, maxHostSize: 1_000_000, maxEntrySize: 1_000_000 })
  const stored = [
    [A, url(A, 1), make(url(A, 1), { body: 10 })],
    [A, url(A, 2), make(url(A, 2), { body: 2000 })],
    [B, url(B, 1), make(url(B, 1), { body: 333, vary: { 'accept-encoding': 'gzip' } })],
    [B, url(B, 1), make(url(B, 1), { body: 444, vary: { 'accept-encoding': 'br' } })]
  ] as const
  for (const [host, u, r] of stored) assert.equal(store.put(host, u, r), true)

  const total = stored.reduce((n, [, , r]) => n + r.size, 0)
  const c = store.counters()
  assert.equal(c.bytes, total)
  assert.equal(c.entries, 4)
  assert.equal(c.hosts, 2)
  assert.equal(c.evictions, 0)
  const perHost = store.hostBytes()
  assert.equal(perHost[A], stored[0][2].size + stored[1][2].size)
  assert.equal(perHost[B], stored[2][2].size + stored[3][2].size)

  assert.equal(store.delete(A, url(A, 1)), 1)
  assert.equal(store.counters().bytes, total - stored[0][2].size)
  assert.equal(store.delete(A, url(A, 2)), 1)
  assert.equal(store.delete(B, url(B, 1)), 2)
  assert.deepEqual(store.counters(), { bytes: 0, entries: 0, evictions: 0, hosts: 0 })
  assert.deepEqual(store.hostBytes(), {})
})

test('filling one host past maxHostSize evicts only that host\'s entries', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: Math.floor(3.5 * S), maxEntrySize: 2 * S })
  store.put(B, url(B, 1), make(url(B, 1)))
  store.put(B, url(B, 2), make(url(B, 2)))
  for (let i = 1; i <= 6; i++) assert.equal(store.put(A, url(A, i), make(url(A, i))), true)

  // A keeps its 3 most recent; B keeps both.
  for (let i = 1; i <= 3; i++) assert.equal(store.peek(A, url(A, i)), undefined, `A ${i} evicted`)
  for (let i = 4; i <= 6; i++) assert.ok(store.peek(A, url(A, i)) !== undefined, `A ${i} kept`)
  assert.ok(store.peek(B, url(B, 1)) !== undefined)
  assert.ok(store.peek(B, url(B, 2)) !== undefined)

  const c = store.counters()
  assert.equal(c.entries, 5)
  assert.equal(c.bytes, 5 * S)
  assert.equal(c.evictions, 3)
  assert.deepEqual(store.hostBytes(), { [A]: 3 * S, [B]: 2 * S })
})

test('within a host, the least recently used URL is evicted first', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: Math.floor(3.5 * S), maxEntrySize: 2 * S })
  for (let i = 1; i <= 3; i++) store.put(A, url(A, i), make(url(A, i)))
  assert.ok(store.get(A, url(A, 1)) !== undefined) // 1 is now the most recently used
  store.put(A, url(A, 4), make(url(A, 4)))
  assert.ok(store.peek(A, url(A, 1)) !== undefined, 'the URL just read is kept')
  assert.equal(store.peek(A, url(A, 2)), undefined, 'the least recently used URL goes')
  assert.ok(store.peek(A, url(A, 3)) !== undefined)
  assert.ok(store.peek(A, url(A, 4)) !== undefined)
})

test('over the total budget, entries are evicted from the least recently used host', () => {
  const store = new Store({ maxSize: Math.floor(4.5 * S), maxHostSize: Math.floor(4.5 * S), maxEntrySize: S })
  store.put(A, url(A, 1), make(url(A, 1)))
  store.put(B, url(B, 1), make(url(B, 1)))
  store.put(C, url(C, 1), make(url(C, 1)))
  // Reading A makes B the least recently used host (A was the oldest before this).
  assert.ok(store.get(A, url(A, 1)) !== undefined)
  store.put(D, url(D, 1), make(url(D, 1)))
  assert.equal(store.counters().evictions, 0, '4 entries fit in 4.5')
  store.put(D, url(D, 2), make(url(D, 2)))

  assert.equal(store.peek(B, url(B, 1)), undefined, 'B, the least recently used host, lost its entry')
  assert.ok(store.peek(A, url(A, 1)) !== undefined, 'A was read recently and is kept')
  assert.ok(store.peek(C, url(C, 1)) !== undefined)
  assert.ok(store.peek(D, url(D, 1)) !== undefined)
  assert.ok(store.peek(D, url(D, 2)) !== undefined)
  const c = store.counters()
  assert.equal(c.bytes, 4 * S)
  assert.ok(c.bytes <= Math.floor(4.5 * S))
  assert.equal(c.entries, 4)
  assert.equal(c.evictions, 1)
  assert.equal(c.hosts, 3, 'the emptied host is dropped')
  assert.equal(store.hostBytes()[B], undefined)
})

test('an entry larger than maxEntrySize is refused and changes nothing', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: 10 * S, maxEntrySize: S - 1 })
  const small = make(url(A, 1), { body: 0 })
  assert.ok(small.size <= S - 1)
  assert.equal(store.put(A, url(A, 1), small), true)
  const before = store.counters()

  const big = make(url(B, 1))
  assert.equal(big.size, S)
  assert.equal(store.put(B, url(B, 1), big), false)
  assert.equal(store.peek(B, url(B, 1)), undefined)
  assert.equal(store.get(B, url(B, 1)), undefined)
  assert.deepEqual(store.counters(), before)
  assert.equal(store.counters().hosts, 1, 'no bucket is created for the refused entry\'s host')
  assert.ok(store.peek(A, url(A, 1)) !== undefined, 'nothing was evicted to make room')
})

test('an entry larger than maxHostSize is refused even when maxEntrySize allows it', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: S - 1, maxEntrySize: 10 * S })
  const small = make(url(A, 1), { body: 0 })
  assert.equal(store.put(A, url(A, 1), small), true)
  const before = store.counters()

  assert.equal(store.put(A, url(A, 2), make(url(A, 2))), false)
  assert.equal(store.peek(A, url(A, 2)), undefined)
  assert.deepEqual(store.counters(), before)
  assert.ok(store.peek(A, url(A, 1)) !== undefined, 'the host\'s other entry was not evicted')
})

test('replacing a variant with the same Vary values does not double-count', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: Math.floor(3.5 * S), maxEntrySize: 2 * S })
  const u = url(A, 1)
  const first = make(u, { vary: { 'accept-encoding': 'gzip' } })
  store.put(A, u, first)
  store.put(A, url(A, 2), make(url(A, 2)))
  store.put(A, url(A, 3), make(url(A, 3)))
  const full = store.counters()

  const second = make(u, { vary: { 'accept-encoding': 'gzip' } })
  assert.notEqual(second, first)
  assert.equal(store.put(A, u, second), true)
  assert.deepEqual(store.peek(A, u), [second])
  const c = store.counters()
  assert.equal(c.bytes, full.bytes)
  assert.equal(c.entries, 3)
  assert.equal(c.evictions, 0, 'a replacement is not an eviction and makes nothing else go')
  assert.ok(store.peek(A, url(A, 2)) !== undefined)
  assert.ok(store.peek(A, url(A, 3)) !== undefined)
  assert.equal(store.hostBytes()[A], full.bytes)
})

test('replacing a response without Vary keeps one entry', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: 10 * S, maxEntrySize: 2 * S })
  const u = url(A, 1)
  const first = make(u, { body: 50 })
  const second = make(u, { body: 70 })
  store.put(A, u, first)
  store.put(A, u, second)
  assert.deepEqual(store.peek(A, u), [second])
  assert.equal(store.counters().bytes, second.size)
  assert.equal(store.counters().entries, 1)
})

test('put with `replaces` drops the superseded variant even when its Vary values differ', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: 10 * S, maxEntrySize: 2 * S })
  const u = url(A, 1)
  const old = make(u, { vary: { 'accept-language': 'en' } })
  const other = make(u, { vary: { 'accept-language': 'fr' } })
  store.put(A, u, old)
  store.put(A, u, other)
  const fresh = make(u, { vary: { 'accept-language': 'de' } })
  store.put(A, u, fresh, old)
  assert.deepEqual(store.peek(A, u), [fresh, other])
  assert.equal(store.counters().bytes, fresh.size + other.size)
  assert.equal(store.counters().entries, 2)
})

test('several Vary variants of one URL are kept, most recent first', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: 10 * S, maxEntrySize: 2 * S })
  const u = url(A, 1)
  const gzip = make(u, { vary: { 'accept-encoding': 'gzip' } })
  const br = make(u, { vary: { 'accept-encoding': 'br' } })
  const identity = make(u, { vary: { 'accept-encoding': 'identity' } })
  store.put(A, u, gzip)
  store.put(A, u, br)
  store.put(A, u, identity)
  assert.deepEqual(store.get(A, u), [identity, br, gzip])
  assert.equal(store.counters().entries, 3)
  assert.equal(store.counters().bytes, sum([gzip, br, identity]))

  // A newer gzip response replaces the old one and becomes the most recent.
  const gzip2 = make(u, { vary: { 'accept-encoding': 'gzip' }, body: 120 })
  store.put(A, u, gzip2)
  assert.deepEqual(store.get(A, u), [gzip2, identity, br])
  assert.equal(store.counters().entries, 3)
  assert.equal(store.counters().bytes, sum([gzip2, identity, br]))
})

test('delete removes every variant of a URL and returns how many', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: 10 * S, maxEntrySize: 2 * S })
  const u = url(A, 1)
  for (const enc of ['gzip', 'br', 'identity']) store.put(A, u, make(u, { vary: { 'accept-encoding': enc } }))
  const other = make(url(A, 2))
  store.put(A, url(A, 2), other)

  assert.equal(store.delete(A, u), 3)
  assert.equal(store.peek(A, u), undefined)
  assert.equal(store.get(A, u), undefined)
  assert.deepEqual(store.peek(A, url(A, 2)), [other], 'another URL on the same host is untouched')
  assert.equal(store.counters().entries, 1)
  assert.equal(store.counters().bytes, other.size)
  assert.equal(store.counters().evictions, 0, 'deletes are not evictions')

  assert.equal(store.delete(A, u), 0, 'already gone')
  assert.equal(store.delete('unknown.example', u), 0)
})

test('the evictions counter counts each evicted variant', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: Math.floor(3.5 * S), maxEntrySize: 2 * S })
  const u = url(A, 1)
  store.put(A, u, make(u, { vary: { 'accept-encoding': 'gzip' } }))
  store.put(A, u, make(u, { vary: { 'accept-encoding': 'br' } }))
  assert.equal(store.counters().evictions, 0)
  store.put(A, url(A, 2), make(url(A, 2)))
  assert.equal(store.counters().evictions, 0)
  // A 4th entry pushes out URL 1 and both of its variants.
  store.put(A, url(A, 3), make(url(A, 3)))
  assert.equal(store.peek(A, u), undefined)
  assert.equal(store.counters().evictions, 2)
  assert.equal(store.counters().entries, 2)
  store.put(A, url(A, 4), make(url(A, 4)))
  assert.equal(store.counters().evictions, 2, '3 plain entries fit')
  // A 5th pushes out URL 2, one variant.
  store.put(A, url(A, 5), make(url(A, 5)))
  assert.equal(store.counters().evictions, 3)
  assert.equal(store.counters().bytes, 3 * S)
})

test('clear empties the store and zeroes the byte count', () => {
  const store = new Store({ maxSize: 100 * S, maxHostSize: 10 * S, maxEntrySize: 2 * S })
  store.put(A, url(A, 1), make(url(A, 1)))
  store.put(B, url(B, 1), make(url(B, 1)))
  store.clear()
  const c = store.counters()
  assert.equal(c.bytes, 0)
  assert.equal(c.entries, 0)
  assert.equal(c.hosts, 0)
  assert.equal(store.peek(A, url(A, 1)), undefined)
})

test('maxHosts: a new host past the limit evicts the least recently used host whole', () => {
  const evicted: string[] = []
  const store = new Store({ maxSize: 100 * S, maxHostSize: 10 * S, maxEntrySize: 2 * S, maxHosts: 2, onEvict: (host) => evicted.push(host) })
  store.put(A, url(A, 1), make(url(A, 1)))
  store.put(A, url(A, 2), make(url(A, 2)))
  store.put(B, url(B, 1), make(url(B, 1)))
  store.get(A, url(A, 1)) // A is now more recent than B
  store.put(C, url(C, 1), make(url(C, 1)))
  const c = store.counters()
  assert.equal(c.hosts, 2)
  assert.equal(store.peek(B, url(B, 1)), undefined)
  assert.ok(store.peek(A, url(A, 1)) !== undefined)
  assert.deepEqual(evicted, [B])
  assert.equal(c.evictions, 1)
  assert.equal(c.entries, 3)
  assert.equal(c.bytes, 3 * S)
})

test('a recorded body is kept as one Buffer of its own: a lone chunk owning its memory as it is, anything else copied', () => {
  const own = Buffer.allocUnsafeSlow(64 * 1024).fill(7)
  const kept = recordedBody([own], own.length)
  assert.equal(kept.length, 1)
  assert.equal(kept[0], own)

  // A 1 KiB view into a 64 KiB read would keep the whole read alive.
  const read = Buffer.allocUnsafeSlow(64 * 1024).fill(1)
  const view = read.subarray(100, 1124)
  const copied = recordedBody([view], view.length)
  assert.notEqual(copied[0], view)
  assert.equal(copied[0]?.buffer.byteLength, 1024)
  assert.deepEqual(copied[0], view)

  // Several reads: one call into the caller's handler per hit, not one per read.
  const parts = [Buffer.from('one '), Buffer.from('two '), Buffer.from('three')]
  const joined = recordedBody(parts, 13)
  assert.equal(joined.length, 1)
  assert.equal(joined[0]?.toString(), 'one two three')

  assert.deepEqual(recordedBody([], 0), [])
})
