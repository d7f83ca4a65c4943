import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Ring, type HashFunction } from '../src/ring.js'
import fc from 'fast-check'
import { loadHash } from '../src/hash.js'
import { Peer } from '../src/index.js'
import { normaliseOriginUrl } from '../src/url.js'

// A hand-made hash so that every point on the ring is known.
//
// The ring hashes `${vnodeIndex}${member}` for each vnode (groupcache's scheme), so with members
// 'A', 'B', 'C' and 2 vnodes the ring points come from the inputs '0A', '1A', '0B', ... and are
// looked up in POINTS. Keys are written 'key:<n>' and hash to <n>. Anything else throws, so a
// test cannot pass by hashing something it did not mean to.
const POINTS: Readonly<Record<string, number>> = {
  '0A': 100,
  '1A': 600,
  '0B': 300,
  '1B': 800,
  '0C': 500,
  '1C': 900
}

const handHash: HashFunction = (input) => {
  const point = POINTS[input]
  if (point !== undefined) return point
  const m = /^key:(-?\d+)$/.exec(input)
  if (m !== null) return Number(m[1])
  throw new Error(`unexpected hash input ${JSON.stringify(input)}`)
}

// Sorted points: 100 A, 300 B, 500 C, 600 A, 800 B, 900 C.
// A key belongs to the first point at or after its hash, wrapping past 900 back to 100 (A).

const PEERS3 = ['http://10.0.0.1:3000', 'http://10.0.0.2:3000', 'http://10.0.0.3:3000']
const PEER4 = 'http://10.0.0.4:3000'
const KEYS = Array.from({ length: 10_000 }, (_, i) => `https://origin.example/assets/${i}.js`)

function owners (ring: Ring, keys: readonly string[]): Array<string | undefined> {
  return keys.map((k) => ring.get(k))
}

test('with a hand-placed ring, each key belongs to the first point at or after its hash', () => {
  const ring = new Ring(['A', 'B', 'C'], 2, handHash)
  const expected: Array<[number, string]> = [
    [0, 'A'], // before the first point
    [99, 'A'],
    [100, 'A'], // exactly on a point: that point owns it
    [101, 'B'],
    [300, 'B'],
    [301, 'C'],
    [500, 'C'],
    [501, 'A'],
    [600, 'A'],
    [601, 'B'],
    [800, 'B'],
    [801, 'C'],
    [900, 'C'] // the last point
  ]
  for (const [h, owner] of expected) {
    assert.equal(ring.get(`key:${h}`), owner, `key:${h}`)
    assert.equal(ring.getByHash(h), owner, `getByHash(${h})`)
  }
})

test('a key hashing past the last point wraps around to the first point', () => {
  const ring = new Ring(['A', 'B', 'C'], 2, handHash)
  // The first point (100) is A's; the last (900) is C's.
  assert.equal(ring.get('key:901'), 'A')
  assert.equal(ring.get('key:4294967295'), 'A')
  assert.equal(ring.getByHash(0xffffffff), 'A')
  // Sanity: just before the wrap, C still owns it, so the wrap is what changed the owner.
  assert.equal(ring.get('key:900'), 'C')
})

test('a hash returning a signed 32-bit value is read as unsigned', () => {
  // P's only point is at 100; Q's hash returns -0x10000000, i.e. 0xf0000000 unsigned, near the
  // top of the ring. A key hashing to -0x20000000 (0xe0000000 unsigned) lies just below Q's
  // point, so it is Q's; read as a signed number it would sort before every point and be P's.
  const signed: HashFunction = (input) => {
    if (input === '0P') return 100
    if (input === '0Q') return -0x10000000
    return handHash(input)
  }
  const ring = new Ring(['P', 'Q'], 1, signed)
  assert.equal(ring.get('key:50'), 'P')
  assert.equal(ring.get('key:101'), 'Q')
  assert.equal(ring.get(`key:${-0x20000000}`), 'Q')
  assert.equal(ring.get(`key:${0xe0000000}`), 'Q')
  assert.equal(ring.getByHash(0xf0000000), 'Q')
  // -1 is 0xffffffff: past Q's point, so it wraps round to P.
  assert.equal(ring.get('key:-1'), 'P')
})

test('members are sorted, deduplicated and counted', () => {
  const ring = new Ring(['C', 'A', 'B', 'A', 'C'], 2, handHash)
  assert.deepEqual(ring.members, ['A', 'B', 'C'])
  assert.equal(ring.size, 3)
})

test('an empty ring returns undefined for every key', () => {
  const ring = new Ring([], 160, handHash)
  assert.equal(ring.size, 0)
  assert.deepEqual(ring.members, [])
  assert.equal(ring.get('key:0'), undefined)
  assert.equal(ring.get('key:123456'), undefined)
  assert.equal(ring.getByHash(0), undefined)
  assert.equal(ring.getByHash(0xffffffff), undefined)
})

test('a ring with no vnodes has no points and returns undefined', () => {
  const ring = new Ring(['A', 'B'], 0, handHash)
  assert.equal(ring.get('key:100'), undefined)
})

test('a single-member ring owns every key', async () => {
  const h = await loadHash()
  const only = PEERS3[0] as string
  const ring = new Ring([only], 160, h)
  for (const k of KEYS.slice(0, 500)) assert.equal(ring.get(k), only)
})

test('two members colliding on one point: the owner does not depend on input order', () => {
  // X and Y both place their only vnode at 50.
  const collide: HashFunction = (input) => {
    if (input === '0X' || input === '0Y') return 50
    if (input === '0Z') return 700
    return handHash(input)
  }
  const a = new Ring(['X', 'Y', 'Z'], 1, collide)
  const b = new Ring(['Z', 'Y', 'X'], 1, collide)
  const c = new Ring(['Y', 'Z', 'X'], 1, collide)
  for (const k of ['key:0', 'key:50', 'key:51', 'key:700', 'key:701']) {
    const owner = a.get(k)
    assert.notEqual(owner, undefined)
    assert.equal(b.get(k), owner, k)
    assert.equal(c.get(k), owner, k)
  }
  // The point at 700 is Z's whatever the order.
  assert.equal(a.get('key:51'), 'Z')
})

test('the order of members does not change any owner (real hash, many keys)', async () => {
  const h = await loadHash()
  const members = ['http://peer-a:8080', 'http://peer-b:8080', 'http://peer-c:8080', 'http://peer-d:8080', 'http://peer-e:8080']
  const reference = new Ring(members, 160, h)
  const expected = owners(reference, KEYS)
  // The check means something only if the keys are spread over every member.
  assert.deepEqual(new Set(expected), new Set(members))

  // Deterministic shuffles: reversed, rotated, and a seeded Fisher-Yates.
  let seed = 12345
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed / 0x80000000
  }
  const shuffles: string[][] = [[...members].reverse(), [...members.slice(2), ...members.slice(0, 2)]]
  for (let s = 0; s < 5; s++) {
    const copy = [...members]
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1))
      const tmp = copy[i] as string
      copy[i] = copy[j] as string
      copy[j] = tmp
    }
    shuffles.push(copy)
  }
  for (const order of shuffles) {
    assert.deepEqual(owners(new Ring(order, 160, h), KEYS), expected, `order ${order.join(' ')}`)
  }
})

test('duplicate members are ignored', async () => {
  const h = await loadHash()
  const withDuplicates = [PEERS3[0], PEERS3[1], PEERS3[0], PEERS3[2], PEERS3[1], PEERS3[1]] as string[]
  const ring = new Ring(withDuplicates, 160, h)
  assert.equal(ring.size, 3)
  assert.deepEqual(owners(ring, KEYS), owners(new Ring(PEERS3, 160, h), KEYS))
})

test('duplicates place no extra points: the hash is called once per vnode of each distinct member', () => {
  const seen: string[] = []
  const counting: HashFunction = (input) => {
    seen.push(input)
    return handHash(input)
  }
  new Ring(['A', 'B', 'A', 'C', 'B'], 2, counting)
  assert.deepEqual(seen.sort(), ['0A', '0B', '0C', '1A', '1B', '1C'])
})

test('adding a 4th member to 3 moves about a quarter of the keys, all of them to the new member', async () => {
  const h = await loadHash()
  const before = new Ring(PEERS3, 160, h)
  const after = new Ring([...PEERS3, PEER4], 160, h)
  let moved = 0
  for (const k of KEYS) {
    const was = before.get(k)
    const now = after.get(k)
    assert.ok(was !== undefined && now !== undefined)
    if (was !== now) {
      moved++
      assert.equal(now, PEER4, `${k} moved from ${was} to ${now}, not to the new member`)
    }
  }
  const fraction = moved / KEYS.length
  assert.ok(fraction > 0.17 && fraction < 0.33, `moved ${moved} of ${KEYS.length} (${fraction}), expected about 1/4`)
})

test('removing a member moves only the keys it owned', async () => {
  const h = await loadHash()
  const four = [...PEERS3, PEER4]
  const removed = PEERS3[1] as string
  const before = new Ring(four, 160, h)
  const after = new Ring(four.filter((m) => m !== removed), 160, h)
  let orphaned = 0
  for (const k of KEYS) {
    const was = before.get(k)
    const now = after.get(k)
    if (was === removed) {
      orphaned++
      assert.notEqual(now, removed)
      assert.ok(now !== undefined && four.includes(now))
    } else {
      assert.equal(now, was, `${k} was owned by ${String(was)}, which stayed, but moved to ${String(now)}`)
    }
  }
  // Not vacuous: the removed member owned a real share of the keys.
  assert.ok(orphaned > KEYS.length * 0.15, `removed member owned only ${orphaned} keys`)
})

test('160 vnodes spread keys over 5 members within 0.6x-1.4x of the mean', async () => {
  const h = await loadHash()
  const members = ['a', 'b', 'c', 'd', 'e'].map((x) => `http://peer-${x}.internal:8080`)
  const ring = new Ring(members, 160, h)
  const counts = new Map<string, number>(members.map((m) => [m, 0]))
  for (const k of KEYS) {
    const owner = ring.get(k)
    assert.ok(owner !== undefined)
    counts.set(owner, (counts.get(owner) ?? 0) + 1)
  }
  assert.equal(counts.size, members.length)
  const mean = KEYS.length / members.length
  for (const [member, count] of counts) {
    assert.ok(count >= 0.6 * mean && count <= 1.4 * mean, `${member} owns ${count} keys, mean ${mean}`)
  }
})

test('a lookup finds the first point at or after the hash, whatever the bucket layout (property)', () => {
  // Points are drawn by hand (the hash of '<vnode><member>' is looked up in a table), so they
  // can pile up in one bucket, sit on bucket edges, or hit 0 and 2^32 - 1.
  const edge = fc.oneof(
    fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x10000, 0xffff, 0x1ffff),
    fc.integer({ min: 0, max: 0xffffffff }),
    fc.integer({ min: 0, max: 63 }).map((b) => (b * 0x4000000) >>> 0)
  )
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 6 }),
    fc.integer({ min: 1, max: 40 }),
    fc.array(edge, { minLength: 240, maxLength: 240 }),
    fc.array(edge, { minLength: 1, maxLength: 50 }),
    (memberCount, vnodes, pointValues, lookups) => {
      const members = Array.from({ length: memberCount }, (_, m) => `m${m}`)
      const table = new Map<string, number>()
      members.forEach((member, m) => {
        for (let v = 0; v < vnodes; v++) table.set(`${v}${member}`, pointValues[(m * vnodes + v) % pointValues.length] as number)
      })
      const ring = new Ring(members, vnodes, (input) => table.get(input) ?? 0)
      // The reference: every point, sorted by hash then member, and a linear scan.
      const points = [...table].map(([input, h]) => ({ h, member: input.replace(/^\d+/, '') }))
        .sort((a, b) => a.h - b.h || (a.member < b.member ? -1 : a.member > b.member ? 1 : 0))
      for (const h of lookups) {
        const expected = (points.find((p) => p.h >= h) ?? points[0])?.member
        assert.equal(ring.getByHash(h), expected, `hash ${h}`)
      }
    }
  ), { numRuns: 2000 })
})

test('ownerOf hashes a canonical URL from its UTF-8 bytes to the owner the string hash of its key gives (property)', async () => {
  const hash = await loadHash()
  const peers = Array.from({ length: 64 }, (_, i) => `http://10.0.${i}.1:3000`)
  const peer = new Peer({ self: peers[0] as string, peers })
  await peer.ready
  const ring = new Ring(peers, 160, hash)
  const expected = (url: string): string | undefined => ring.get(normaliseOriginUrl(url).href)
  try {
    const segment = fc.string({ unit: fc.constantFrom(...'az09-._~%2eE/?&=+ é☃😀'.split('')), maxLength: 30 })
    fc.assert(fc.property(fc.constantFrom('http://a.example', 'https://cdn.example.com:8443', 'http://127.0.0.1:9', 'HTTP://A.example'), segment, (origin, path) => {
      const url = `${origin}/${path}`
      assert.equal(peer.ownerOf(url), expected(url), url)
    }), { numRuns: 5000 })
    // Longer than the byte scratch: the string path, with the same answer.
    const long = `https://a.example/${'x'.repeat(10_000)}`
    assert.equal(peer.ownerOf(long), expected(long))
    // A URL object goes the string way too.
    assert.equal(peer.ownerOf(new URL('https://a.example/u')), expected('https://a.example/u'))
  } finally {
    await peer.destroy()
  }
})
