import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { Agent, request, type Dispatcher } from 'undici'
import { Peer } from '../src/index.js'
import { normaliseReceivedHeaders, normaliseRequestHeaders, sharedRawHeaders, toRawHeaders } from '../src/headers.js'
import { startOrigin, type CountingOrigin } from './helpers/origin.js'

// Header text is one character per byte: 'caf\u00e9' is the obs-text byte 0xE9, and
// '\u00c3\u00a9' the two bytes of UTF-8's é.
const FIELDS = {
  'content-type': 'text/plain',
  'x-latin1': 'caf\u00e9',
  'x-utf8': 'caf\u00c3\u00a9',
  'x-list': ['a', 'b\u00ff']
}
const ENCODINGS = [undefined, 'utf8', 'utf-8', 'latin1', 'binary', 'ascii', 'hex', 'base64', 'ucs2'] as const
const decode = Buffer.prototype.toString

test('sharedRawHeaders gives the bytes toRawHeaders gives, and every decoding a plain Buffer of them would', () => {
  const shared = sharedRawHeaders(FIELDS)
  const plain = toRawHeaders(FIELDS)
  assert.equal(shared.length, plain.length)
  for (let i = 0; i < plain.length; i++) {
    const s = shared[i] as Buffer
    const p = plain[i] as Buffer
    assert.ok(Buffer.isBuffer(s))
    assert.ok(s.equals(p), `field ${i}: ${p.toString('latin1')}`)
    for (const enc of ENCODINGS) {
      // Twice: the second answer comes from what the first computed.
      assert.equal(s.toString(enc), decode.call(p, enc), `field ${i} as ${String(enc)}`)
      assert.equal(s.toString(enc), decode.call(p, enc), `field ${i} as ${String(enc)}, again`)
    }
    assert.equal(s.toString('latin1', 1), decode.call(p, 'latin1', 1))
    assert.equal(s.toString('utf8', 0, 2), decode.call(p, 'utf8', 0, 2))
  }
  assert.ok(Buffer.concat(shared).equals(Buffer.concat(plain)))
  // Borrowed onto another Buffer, the memoised toString decodes that one.
  const other = Buffer.from('other', 'latin1')
  assert.equal((shared[1] as Buffer).toString.call(other, 'latin1'), 'other')
  assert.equal((shared[1] as Buffer).toString.call(other), 'other')
  // Nothing extra shows when a Buffer is inspected or its keys are listed.
  assert.deepEqual(Object.keys(shared[0] as Buffer), Object.keys(plain[0] as Buffer))
})

let origin: CountingOrigin
let peer: Peer
before(async () => {
  origin = await startOrigin()
  origin.route('/fields', (_req, res) => {
    for (const [name, value] of Object.entries(FIELDS)) res.setHeader(name, value)
    res.setHeader('cache-control', 'max-age=300')
    res.end('fields')
  })
  peer = new Peer({ self: 'http://127.0.0.1:1' })
  await peer.ready
})
after(async () => {
  await peer.destroy()
  await origin.close()
})

/** The raw header list a legacy handler is given, and the body. */
function legacyGet (dispatcher: Dispatcher, path: string): Promise<{ status: number, raw: Buffer[], body: string }> {
  return new Promise((resolve, reject) => {
    let raw: Buffer[] = []
    let status = 0
    const chunks: Buffer[] = []
    dispatcher.dispatch({ origin: origin.url, path, method: 'GET', headers: {} }, {
      onConnect () {},
      onHeaders (statusCode: number, headers: Buffer[]) {
        status = statusCode
        raw = headers
        return true
      },
      onData (chunk: Buffer) { chunks.push(chunk); return true },
      onComplete () { resolve({ status, raw, body: Buffer.concat(chunks).toString() }) },
      onError: reject
    } as unknown as Dispatcher.DispatchHandler)
  })
}

/** Each named field's values in the raw list, decoded as `encoding`. */
function fieldsOf (raw: Buffer[], encoding: BufferEncoding): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1').toLowerCase()
    if (name in FIELDS) (out[name] ??= []).push((raw[i + 1] as Buffer).toString(encoding))
  }
  return out
}

test('a stored hit hands legacy callers, request() and fetch the field values a direct response does', async () => {
  const direct = new Agent()
  try {
    const fromOrigin = await legacyGet(direct, '/fields')
    const miss = await legacyGet(peer, '/fields')
    const hit = await legacyGet(peer, '/fields')
    const again = await legacyGet(peer, '/fields')
    assert.equal(origin.count('/fields'), 2)
    assert.equal(hit.body, 'fields')
    for (const enc of ['latin1', 'utf8', 'hex'] as const) {
      const expected = fieldsOf(fromOrigin.raw, enc)
      assert.deepEqual(fieldsOf(miss.raw, enc), expected, `miss, ${enc}`)
      assert.deepEqual(fieldsOf(hit.raw, enc), expected, `hit, ${enc}`)
      assert.deepEqual(fieldsOf(again.raw, enc), expected, `second hit, ${enc}`)
    }

    const viaRequest = await request(`${origin.url}/fields`, { dispatcher: peer })
    await viaRequest.body.text()
    const directRequest = await request(`${origin.url}/fields`, { dispatcher: direct })
    await directRequest.body.text()
    for (const name of Object.keys(FIELDS)) assert.deepEqual(viaRequest.headers[name], directRequest.headers[name], name)

    // Node's own fetch (its bundled undici), as applications call it.
    const viaFetch = await fetch(`${origin.url}/fields`, { dispatcher: peer } as unknown as RequestInit)
    await viaFetch.text()
    const directFetch = await fetch(`${origin.url}/fields`, { dispatcher: direct } as unknown as RequestInit)
    await directFetch.text()
    for (const name of Object.keys(FIELDS)) assert.equal(viaFetch.headers.get(name), directFetch.headers.get(name), name)
    assert.equal(origin.count('/fields'), 4)
  } finally {
    await direct.close()
  }
})

test('normaliseReceivedHeaders reads node:http\'s raw request fields as normaliseRequestHeaders reads the same list', () => {
  const lists: string[][] = [
    [],
    ['Host', '127.0.0.1:1', 'Connection', 'keep-alive', 'Via', '1.1 forwardcache'],
    ['Accept', 'a', 'ACCEPT', 'b', 'accept', 'c'],
    ['Cookie', 'a=1', 'cookie', 'b=2', 'X-Empty', ''],
    ['constructor', 'x', 'toString', 'y', 'hasOwnProperty', 'z'],
    ['Cache-Control', 'no-cache', 'Pragma', 'no-cache', 'If-None-Match', '"a", "b"']
  ]
  for (const list of lists) {
    const expected = normaliseRequestHeaders(list)
    const got = normaliseReceivedHeaders(list)
    assert.deepEqual({ ...got }, { ...expected }, JSON.stringify(list))
    assert.deepEqual(Object.keys(got), Object.keys(expected), JSON.stringify(list))
  }
  // The same refusals, with the same messages.
  const refused: string[][] = [
    ['Bad Name', 'x'],
    ['__proto__', 'x'],
    ['x-split', 'a\r\nb'],
    ['x-nul', 'a\0b'],
    ['x-big', 'v'.repeat(17 * 1024)]
  ]
  for (const list of refused) {
    const expected = (() => { try { normaliseRequestHeaders(list) } catch (err) { return err as Error } })()
    assert.ok(expected instanceof Error, JSON.stringify(list[0]))
    assert.throws(() => normaliseReceivedHeaders(list), { name: expected.name, message: expected.message })
  }
})
