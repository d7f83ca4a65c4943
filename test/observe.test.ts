import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import { request } from 'undici'
import { Peer } from '../src/index.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

let origin: CountingOrigin

before(async () => { origin = await startOrigin() })
after(async () => { await origin.close() })

/** Parses the Prometheus text format: sample lines and the TYPE of each family. */
function parseExposition (text: string): { types: Map<string, string>, samples: Map<string, number> } {
  const types = new Map<string, string>()
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const type = /^# TYPE (\S+) (counter|gauge|histogram)$/.exec(line)
    if (type !== null) { types.set(type[1] as string, type[2] as string); continue }
    if (line.startsWith('# HELP ')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|\+Inf|NaN)$/.exec(line)
    assert.ok(m !== null, `unparsable exposition line: ${line}`)
    samples.set(m[1] as string, Number(m[2]))
  }
  return { types, samples }
}

test('metrics() exposes the counters, gauges and latency histograms in Prometheus text format', async () => {
  const peer = new Peer({ self: 'http://127.0.0.1:1' })
  try {
    for (let i = 0; i < 3; i++) await (await request(origin.url + '/m', { dispatcher: peer })).body.dump()
    const { types, samples } = parseExposition(peer.metrics())
    assert.equal(types.get('forwardcache_requests_total'), 'counter')
    assert.equal(types.get('forwardcache_cache_bytes'), 'gauge')
    assert.equal(types.get('forwardcache_origin_duration_seconds'), 'histogram')
    assert.equal(samples.get('forwardcache_requests_total{result="hit"}'), 2)
    assert.equal(samples.get('forwardcache_requests_total{result="miss"}'), 1)
    assert.equal(samples.get('forwardcache_origin_fetches_total'), 1)
    assert.equal(samples.get('forwardcache_cache_entries'), 1)
    assert.ok((samples.get('forwardcache_cache_bytes') ?? 0) > 0)
    assert.equal(samples.get('forwardcache_origin_duration_seconds_count'), 1)
    assert.equal(samples.get('forwardcache_origin_duration_seconds_bucket{le="+Inf"}'), 1)
    const host = new URL(origin.url).host
    assert.equal(samples.get(`forwardcache_host_hits_total{host="${host}"}`), 2)
    // Every origin request is timed, not only the fills: a POST and an Authorization bypass.
    await (await request(origin.url + '/m', { dispatcher: peer, method: 'POST', body: 'x' })).body.dump()
    await (await request(origin.url + '/m', { dispatcher: peer, headers: { authorization: 'Bearer x' } })).body.dump()
    const after = parseExposition(peer.metrics()).samples
    assert.equal(after.get('forwardcache_origin_fetches_total'), 3)
    assert.equal(after.get('forwardcache_origin_duration_seconds_count'), 3)
  } finally {
    await peer.close()
  }
})

test('diagnostics_channel reports miss, store, hit, forward, forward-error and evict', async () => {
  const seen: Array<[string, Record<string, unknown>]> = []
  const names = ['hit', 'miss', 'store', 'forward', 'forward-error', 'evict']
  const subscribers = names.map((name) => {
    const fn = (message: unknown): void => { seen.push([name, message as Record<string, unknown>]) }
    diagnosticsChannel.subscribe(`forwardcache:${name}`, fn)
    return () => diagnosticsChannel.unsubscribe(`forwardcache:${name}`, fn)
  })
  // A dead second peer: forwards to it fail and fall back to the origin.
  const dead = http.createServer()
  await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve))
  const deadUrl = `http://127.0.0.1:${(dead.address() as AddressInfo).port}`
  await new Promise<void>((resolve) => dead.close(() => resolve()))
  const self = 'http://127.0.0.1:1'
  const peer = new Peer({ self, peers: [self, deadUrl], maxSize: 2048, ejectAfter: 100 })
  try {
    await peer.ready
    const mine: string[] = []
    let theirs = ''
    for (let i = 0; mine.length < 6 || theirs === ''; i++) {
      const url = `${origin.url}/dc-${i}`
      if (peer.ownerOf(url) === self) mine.push(url)
      else if (theirs === '') theirs = url
    }
    const [first] = mine as [string]
    await (await request(first, { dispatcher: peer })).body.dump()
    await (await request(first, { dispatcher: peer })).body.dump()
    await (await request(theirs, { dispatcher: peer })).body.dump()
    // Budget of 2 KiB: a few more entries evict the first ones.
    for (const url of mine.slice(1)) await (await request(url, { dispatcher: peer })).body.dump()
    const kinds = new Set(seen.map(([k]) => k))
    for (const name of names) assert.ok(kinds.has(name), `no ${name} message`)
    const hit = seen.find(([k]) => k === 'hit')?.[1]
    assert.equal(hit?.url, first)
    assert.equal(hit?.self, self)
    const fwdErr = seen.find(([k]) => k === 'forward-error')?.[1]
    assert.equal(fwdErr?.owner, deadUrl)
    assert.ok(fwdErr?.error instanceof Error)
  } finally {
    for (const unsubscribe of subscribers) unsubscribe()
    await peer.close()
  }
})
