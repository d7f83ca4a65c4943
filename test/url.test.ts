import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { Peer } from '../src/index.js'
import { isCanonical, normalisePeerUrl, normaliseOriginUrl, tidyPercentEncoding } from '../src/url.js'

/** The key rule ownerOf() and the router follow: a canonical string is its own key. */
function keyOf (input: string): string {
  return isCanonical(input) ? input : normaliseOriginUrl(input).href
}

test('the canonical fast path gives exactly the normalised URL, fast path or not (property)', () => {
  const hostChars = fc.constantFrom(...'abcnxyzABC0123456789.-x'.split(''))
  const pathChars = fc.constantFrom(...'aZ09-._~!$&\'()*+,;=:@/%%%2eE7fFA4?#[] "<>`{}\\^|'.split(''))
  fc.assert(fc.property(
    fc.constantFrom('http', 'https', 'HTTP'),
    fc.string({ unit: hostChars, minLength: 1, maxLength: 12 }),
    fc.option(fc.constantFrom('80', '443', '8080', '08', '0', '1', '65535', '65536', '99999', '123456', ''), { nil: undefined }),
    fc.string({ unit: pathChars, maxLength: 20 }),
    (scheme, host, port, path) => {
      const input = `${scheme}://${host}${port === undefined ? '' : `:${port}`}/${path}`
      let slow: string
      try {
        slow = normaliseOriginUrl(input).href
      } catch {
        assert.throws(() => keyOf(input))
        return
      }
      assert.equal(keyOf(input), slow, input)
      if (isCanonical(input)) assert.equal(slow, input, input)
    }
  ), { numRuns: 20_000 })
})

test('URLs as programs build them take the fast path', () => {
  for (const input of ['http://127.0.0.1:8080/a/b?x=1&y=2', 'https://cdn.example.com/assets/1/app-2654435761.js?v=3', 'https://api.example.com/v1/items/42',
    'http://localhost:3000/', 'https://a-b.example.co.uk/%20x/~user/(1)*;a=b,c:d@e!f$g?q=a/b?c%2F']) {
    assert.equal(isCanonical(input), true, input)
    assert.equal(normaliseOriginUrl(input).href, input)
  }
})

test('the canonical check reads numeric and Punycode hosts, ports and dot segments as WHATWG URL does', () => {
  for (const input of ['http://0x7f.1/x', 'http://127.1/x', 'http://2130706433/x', 'http://127.000.0.1/x', 'http://10.0.0.1/x', 'http://1.2.3.4.5/x',
    'http://xn--a.com/', 'http://a.xn--zz/', 'http://xn--ls8h.la/', 'http://ab--c.com/', 'http://axn--c.com/', 'http://a.-b/', 'http://a-.b/', 'http://-a.b/',
    'http://a.b:80/', 'https://a.b:443/', 'http://a.b:443/', 'http://a.b:65535/', 'http://a.b:65536/', 'http://a.b:0/', 'http://a.b:/', 'http://a.b:1234567/',
    'http://a.b/x/..', 'http://a.b/x/..?q', 'http://a.b/x/.?q', 'http://a.b/x/.../', 'http://a.b/%2E/', 'http://a.b/%2e%2e', 'http://a.b/x?/../',
    'http://a.b/x?%2e', 'http://a.b/x#f', 'http://a.b', 'http://a..b/', 'http://a.b./', 'http://.a.b/', 'https:/a.b/', 'http://a.b/\\x', 'http://a.b/é']) {
    let slow: string | Error
    try { slow = normaliseOriginUrl(input).href } catch (e) { slow = e as Error }
    if (slow instanceof Error) assert.throws(() => keyOf(input), input)
    else assert.equal(keyOf(input), slow, input)
  }
})

test('percent-encodings are put in one form: unreserved characters decoded, hex digits upper case (RFC 3986 section 6.2.2)', () => {
  const same = [
    ['http://a.b/%7Euser/x', 'http://a.b/~user/x'],
    ['http://a.b/%7euser/x', 'http://a.b/~user/x'],
    ['http://a.b/%41%62%30%2D%5F%2E', 'http://a.b/Ab0-_.'],
    ['http://a.b/x%2fy', 'http://a.b/x%2Fy'],
    ['http://a.b/%c3%a9', 'http://a.b/%C3%A9'],
    ['http://a.b/%C3%A9', 'http://a.b/%C3%A9'],
    ['http://a.b/p?q=%7e%2f%20&r=%4A', 'http://a.b/p?q=~%2F%20&r=J'],
    ['http://a.b/%zz/%2/%', 'http://a.b/%zz/%2/%'],
    ['http://a.b/%2541', 'http://a.b/%2541'],
    ['http://a.b/x/%2e%2E/y', 'http://a.b/y'],
    ['http://a.b/x/a%2e/y', 'http://a.b/x/a./y'],
    ['http://a.b/x?%2e%2e', 'http://a.b/x?..']
  ]
  for (const [input, expected] of same) {
    assert.equal(normaliseOriginUrl(input as string).href, expected, input)
    assert.equal(keyOf(input as string), expected, input)
  }
  // The fast path refuses exactly what the tidying would rewrite.
  for (const input of ['http://a.b/%7E', 'http://a.b/%7e', 'http://a.b/%2f', 'http://a.b/x?%41', 'http://a.b/x?a=%e2']) {
    assert.equal(isCanonical(input), false, input)
  }
  for (const input of ['http://a.b/%2F', 'http://a.b/%C3%A9?q=%20%2B', 'http://a.b/%zz', 'http://a.b/x?%', 'http://a.b/x?%2']) {
    assert.equal(isCanonical(input), true, input)
  }
  assert.equal(tidyPercentEncoding('%7e%7E%7f%7F'), '~~%7F%7F')
})

test('tidying percent-encodings is stable: a decoded hex digit never completes a triplet with a stray %', () => {
  // %%41a decoded naively is %Aa, which the next normalisation (the owner's) reads as 0xAA.
  assert.equal(tidyPercentEncoding('/%%41a'), '/%%41a')
  assert.equal(tidyPercentEncoding('/%4%41'), '/%4%41')
  assert.equal(tidyPercentEncoding('/%%41%42'), '/%%41B')
  assert.equal(tidyPercentEncoding('/%2F%41'), '/%2FA')
  assert.equal(tidyPercentEncoding('/%%7e'), '/%~')
  const units = fc.constantFrom(...'%%%4a1AfF2e7E~x'.split(''))
  fc.assert(fc.property(fc.string({ unit: units, maxLength: 16 }), (s) => {
    const once = tidyPercentEncoding(s)
    assert.equal(tidyPercentEncoding(once), once, s)
    // And through the whole URL normalisation, as the asking peer and then the owner do it.
    const url = normaliseOriginUrl(`http://a.example/p${s}?q${s}`).href
    assert.equal(normaliseOriginUrl(url).href, url, s)
  }), { numRuns: 20_000 })
})

test('peer URLs that differ only in percent-encoding are one peer, on every process of the pool', async () => {
  assert.equal(normalisePeerUrl('http://10.0.0.1:3000/ca%63he/'), 'http://10.0.0.1:3000/cache')
  assert.equal(normalisePeerUrl('http://10.0.0.1:3000/a%2fb'), 'http://10.0.0.1:3000/a%2Fb')
  // Spelled one way in self and another in the pool: this process is still that member.
  const peer = new Peer({ self: 'http://127.0.0.1:1/ca%63he', peers: ['http://127.0.0.1:1/cache', 'http://127.0.0.1:2/%7Eother'] })
  try {
    await peer.ready
    assert.deepEqual([...peer.peers].sort(), ['http://127.0.0.1:1/cache', 'http://127.0.0.1:2/~other'])
    assert.equal(peer.ownerOf('http://127.0.0.1:9/x') !== undefined, true)
  } finally {
    await peer.destroy()
  }
})
